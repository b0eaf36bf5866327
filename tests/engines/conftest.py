"""The llama-server binary (built by hack/build-llama-server.sh), the Ollama binary (built by
hack/build-ollama.sh) and one random-weight model for each, for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from detinfer.engines.llamacpp import vocab_file
from detinfer.engines.llamacpp.model import write_model
from tests.support.llamacpp import llama_server_path
from tests.support.ollama import ollama_path


@pytest.fixture(scope="session")
def llama_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer llama with seed 0 and Llama 3's tokenizer; fails, never skips, without the
    build: `make engines` builds it first."""
    binary, vocab = llama_server_path(), vocab_file()
    for path in (binary, vocab):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run hack/build-llama-server.sh (make llama-server)")
    return write_model(tmp_path_factory.mktemp("llamacpp") / "tiny.gguf", vocab, seed=0)


@pytest.fixture(scope="session")
def ollama_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model for Ollama, in a folder of its own (the Modelfile goes beside it); the
    tokenizer comes from llama.cpp's build, so both builds must be there (`make engines`)."""
    binary, vocab = ollama_path(), vocab_file()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run hack/build-ollama.sh (make ollama)")
    if not vocab.is_file():
        pytest.fail(f"{vocab} is missing: run hack/build-llama-server.sh (make llama-server)")
    return write_model(tmp_path_factory.mktemp("ollama") / "tiny.gguf", vocab, seed=0)
