"""Ollama's `ollama serve` as a real process on loopback, serving a random-weight GGUF that
`ollama create` has made into an Ollama model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from detinfer.engines.ollama import (
    MODEL_NAME,
    binary,
    create_command,
    modelfile,
    server_command,
    server_env,
)
from tests.support.engines import ServerProcess, free_port


def ollama_path() -> Path:
    """$OLLAMA (what `make engines` passes), else the cached build of the pinned version."""
    given = os.environ.get("OLLAMA")
    return Path(given) if given else binary()


class OllamaServer(ServerProcess):
    """`ollama serve` with `parallel` slots (OLLAMA_NUM_PARALLEL), its models and its home (where
    it writes a key pair) in `workdir`; on start, `ollama create` makes `model` (a GGUF file)
    into MODEL_NAME with the recommended settings (`modelfile`). A context manager that waits
    for GET /api/version (Ollama has no /health) and stops the server on the way out."""

    name = "ollama"
    health_path = "/api/version"

    def __init__(
        self,
        model: Path,
        workdir: Path,
        *,
        parallel: int = 1,
        flash_attention: bool | None = None,
        log: Path | None = None,
    ) -> None:
        self.model = model
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.binary = ollama_path()
        self.args = server_command(self.binary)
        (workdir / "home").mkdir(parents=True, exist_ok=True)
        self.env = server_env(
            self.port,
            workdir / "models",
            parallel=parallel,
            flash_attention=flash_attention,
            base={**os.environ, "HOME": str(workdir / "home")},
        )
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> OllamaServer:
        self.launch(self.env, timeout)
        # The Modelfile beside the GGUF: `FROM ./tiny.gguf` is read relative to it.
        path = self.model.parent / "Modelfile"
        path.write_text(modelfile(f"./{self.model.name}"))
        done = subprocess.run(
            create_command(self.binary, MODEL_NAME, path),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ollama create failed ({done.returncode}): {done.stderr}")
        return self
