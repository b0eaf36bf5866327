"""llama.cpp's `llama-server`: where hack/build-llama-server.sh caches it, how it is started.

The server is built from the llama.cpp source that the `llama-cpp-python` sdist on PyPI
vendors (`vendor/llama.cpp`), so the sdist's version names the build.
"""

from __future__ import annotations

import os
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The sdist the server is built from; hack/versions.env pins the same (a unit test checks)."""

DEFAULT_VOCAB = "ggml-vocab-llama-bpe.gguf"
"""Llama 3's BPE tokenizer, as a vocab-only GGUF file from the sdist's `models/` folder."""


def build_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """$DETINFER_CACHE/llama.cpp/<version> (DETINFER_CACHE defaults to ~/.cache/detinfer)."""
    cache = os.environ.get("DETINFER_CACHE") or str(Path.home() / ".cache" / "detinfer")
    return Path(cache) / "llama.cpp" / version


def server_binary(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return build_dir(version) / "bin" / "llama-server"


def vocab_file(name: str = DEFAULT_VOCAB, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return build_dir(version) / "models" / name


def server_command(
    binary: Path,
    model: Path,
    port: int,
    *,
    parallel: int = 1,
    seed: int = 42,
    threads: int = 2,
    context: int = 8192,
    host: str = "127.0.0.1",
) -> list[str]:
    """llama-server as the guides recommend for reproducible outputs: a fixed `--seed`,
    `--temp 0` and `--top-k 1` (greedy); `--parallel 1` is the one-slot setting, more slots
    decode their requests together in one batch (continuous batching, on by default).

    The context is shared by the slots (`--ctx-size` / `--parallel` each): 8192 holds the
    validator's longest prompt (4,097 characters) and its output in each of 4 slots. The web
    UI is off: nothing but the API listens."""
    return [
        str(binary),
        "--model",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--seed",
        str(seed),
        "--temp",
        "0",
        "--top-k",
        "1",
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(context),
        "--threads",
        str(threads),
        "--no-webui",
    ]
