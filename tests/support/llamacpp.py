"""llama.cpp's `llama-server` as a real process on loopback, serving a random-weight GGUF."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from detinfer.engines.llamacpp import server_binary, server_command
from tests.support.engines import free_port


def llama_server_path() -> Path:
    """$LLAMA_SERVER (what `make engines` passes), else the cached build of the pinned version."""
    given = os.environ.get("LLAMA_SERVER")
    return Path(given) if given else server_binary()


class LlamaServer:
    """llama-server with the recommended settings (`server_command`) and `parallel` slots; a
    context manager that waits for GET /health and stops the server on the way out."""

    def __init__(self, model: Path, *, parallel: int = 1, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = server_command(llama_server_path(), model, self.port, parallel=parallel)
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> LlamaServer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama-server exited with {self.process.returncode}: {self.args}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama-server did not answer /health within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
