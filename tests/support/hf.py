"""vLLM's CPU build and `transformers serve` as real processes on loopback, serving the
random-weight Hugging Face model (detinfer.engines.hf.model)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from detinfer.engines.hf import (
    transformers_binary,
    transformers_serve_command,
    venv_python,
    vllm_server_command,
)
from tests.support.engines import ServerProcess, free_port

VLLM_START_SECONDS = 600.0
"""vLLM compiles the model with torch.compile at start: about 45 s here with its compile cache
(~/.cache/vllm), 95 s without, on 2 loaded cores."""


class VllmServer(ServerProcess):
    """vLLM's OpenAI server (`vllm_server_command`); a context manager that waits for GET
    /health and stops the server (and its engine-core processes) on the way out. `env` adds
    to the environment (VLLM_* variables)."""

    name = "vllm"

    def __init__(
        self,
        model: Path,
        *,
        max_num_seqs: int | None = None,
        prefix_caching: bool | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = vllm_server_command(
            venv_python(),
            model,
            self.port,
            max_num_seqs=max_num_seqs,
            prefix_caching=prefix_caching,
        )
        self.env = env or {}
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = VLLM_START_SECONDS) -> VllmServer:
        self.launch({**os.environ, **self.env}, timeout)
        return self


class TransformersServer(ServerProcess):
    """`transformers serve MODEL` (`transformers_serve_command`); requests must name the model
    as `model_name` (the path as given)."""

    name = "transformers serve"

    def __init__(
        self, model: Path, *, continuous_batching: bool = False, log: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_name = str(model)
        self.args = transformers_serve_command(
            transformers_binary(), model, self.port, continuous_batching=continuous_batching
        )
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> TransformersServer:
        self.launch(None, timeout)
        return self
