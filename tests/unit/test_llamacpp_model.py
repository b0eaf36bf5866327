"""The random-weight GGUF writer and the pinned llama.cpp build (no server: tests/engines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from gguf import GGUFReader, GGUFWriter

from detinfer.engines.llamacpp import LLAMA_CPP_PYTHON_VERSION
from detinfer.engines.llamacpp.model import ModelShape, main, write_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = ModelShape(layers=1, hidden=16, heads=2, kv_heads=1, ffn=32, context=64)


def test_the_package_builds_the_version_hack_pins():
    pinned = re.search(
        r"^LLAMA_CPP_PYTHON_VERSION=(\S+)$", (ROOT / "hack/versions.env").read_text(), re.M
    )
    assert pinned is not None and pinned.group(1) == LLAMA_CPP_PYTHON_VERSION


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    """A vocab-only GGUF as llama.cpp ships them: tokenizer key-values, no tensors."""
    path = tmp_path / "vocab.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(40)])
    writer.add_token_types([1] * 40)
    writer.add_bos_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_model_carries_the_tokenizer_and_the_same_seed_writes_the_same_bytes(tmp_path, vocab):
    a = write_model(tmp_path / "a.gguf", vocab, seed=0, shape=SMALL)
    b = write_model(tmp_path / "b.gguf", vocab, seed=0, shape=SMALL)
    c = write_model(tmp_path / "c.gguf", vocab, seed=1, shape=SMALL)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    reader = GGUFReader(a)
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 40
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    # ggml's order: columns first.
    assert shapes["token_embd.weight"] == shapes["output.weight"] == (16, 40)
    assert shapes["blk.0.attn_k.weight"] == (16, 8)


def test_bad_shapes_and_files_name_the_flag(tmp_path, vocab, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "--out",
                str(tmp_path / "x.gguf"),
                "--vocab",
                str(vocab),
                "--hidden",
                "30",
                "--heads",
                "4",
            ]
        )
    assert exit_.value.code == 2
    assert "--hidden 30 is not a multiple of --heads 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.gguf"), "--vocab", str(tmp_path / "none.gguf")])
    assert "none.gguf': no such file" in capsys.readouterr().err
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"nope")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.gguf"), "--vocab", str(not_gguf)])
    assert "cannot read it as GGUF" in capsys.readouterr().err
