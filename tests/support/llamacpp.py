"""llama.cpp's `llama-server` as a real process on loopback, serving a random-weight GGUF."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from detinfer.engines.llamacpp import server_binary, server_command
from tests.support.engines import ServerProcess, free_port


def llama_server_path() -> Path:
    """$LLAMA_SERVER (what `make engines` passes), else the cached build of the pinned version."""
    given = os.environ.get("LLAMA_SERVER")
    return Path(given) if given else server_binary()


class LlamaServer(ServerProcess):
    """llama-server with the recommended settings (`server_command`) and `parallel` slots; a
    context manager that waits for GET /health and stops the server on the way out."""

    name = "llama-server"

    def __init__(self, model: Path, *, parallel: int = 1, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = server_command(llama_server_path(), model, self.port, parallel=parallel)
        self.log = log
        self.process: subprocess.Popen | None = None
