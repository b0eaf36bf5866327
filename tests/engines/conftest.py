"""The llama-server binary (built by hack/build-llama-server.sh) and one random-weight model
for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
