"""Write a small Llama-architecture model in the Hugging Face layout, with random weights and
a tokenizer trained here.

vLLM and `transformers serve` load a model folder as the Hugging Face Hub lays it out:
config.json, safetensors weights, generation_config.json and a tokenizer. Downloading one is
slow and pins the tests to a host; a few layers of seeded random weights load in seconds and
generate fast on a CPU. The tokenizer is a byte-level BPE trained with the `tokenizers`
library on a text shipped in this package (corpus.txt), so any text encodes and decodes back
to itself, and it carries a chat template for the chat endpoints. Only numpy, safetensors and
tokenizers write it (no torch, no transformers); the same seed writes the same files, byte for
byte.

    python -m detinfer.engines.hf.model --out tiny-llama --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS = "<|bos|>"
EOS = "<|eos|>"
"""The special tokens, ids 0 and 1. Completions start with BOS (the tokenizer's post-processor
adds it, as Llama 3's does); the chat template writes it itself."""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Each message as `<|role|>`, a newline, its text and EOS; then `<|assistant|>` and a newline
where a reply is to follow. The role markers are plain text, not special tokens."""

OUTPUT_STD = 0.2
"""Of the output projection's weights: logits of standard deviation about 0.2 * sqrt(hidden)."""


@dataclass(frozen=True)
class ModelShape:
    """The model's size; `vocab` is the most tokens the tokenizer may have (the trainer stops
    earlier when the corpus has no pair left that occurs twice)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    context: int = 8192
    """Long enough for the validator's longest prompt (4,097 characters) and its output."""
    vocab: int = 2048

    def check(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "ffn", "context"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.vocab < 258:
            raise ValueError(
                f"--vocab must be at least 258 (256 bytes and 2 specials), got {self.vocab}"
            )
        if self.hidden % self.heads:
            raise ValueError(f"--hidden {self.hidden} is not a multiple of --heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"--heads {self.heads} is not a multiple of --kv-heads {self.kv_heads}"
            )
        if (self.hidden // self.heads) % 2:
            raise ValueError(f"the head size {self.hidden // self.heads} must be even (RoPE)")


def corpus() -> str:
    """The text the tokenizer is trained on (corpus.txt, shipped in this package)."""
    return resources.files(__package__).joinpath("corpus.txt").read_text(encoding="utf-8")


def train_tokenizer(text: str, vocab: int) -> Tokenizer:
    """A byte-level BPE (GPT-2's pre-tokenizer and byte alphabet, as Llama 3 uses) with BOS and
    EOS as ids 0 and 1. No continuing-subword prefix and no dropout: the trainer then assigns
    ids and breaks ties in a fixed order, so the same text gives the same tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0), (EOS, 1)]
    )
    return tokenizer


def _json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_model(out: Path, seed: int, shape: ModelShape = ModelShape()) -> Path:
    """Write the model folder `out` (made if missing): config.json, generation_config.json,
    model.safetensors (float32), tokenizer.json and tokenizer_config.json.

    The output projection is its own matrix: tied to the token embedding, a model this shallow
    repeats its input token forever (the embedding dominates the residual)."""
    shape.check()
    tokenizer = train_tokenizer(corpus(), shape.vocab)
    n_vocab = tokenizer.get_vocab_size()
    if tokenizer.token_to_id(BOS) != 0 or tokenizer.token_to_id(EOS) != 1:
        raise ValueError("the tokenizer's special tokens are not ids 0 and 1")
    rng = np.random.default_rng(seed)
    head = shape.hidden // shape.heads
    kv = shape.kv_heads * head

    def matrix(rows: int, cols: int, std: float) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # Embeddings of unit scale and 1/sqrt(fan-in) elsewhere keep activations of order 1; the
    # output's scale spreads the logits over a few units, so greedy picks vary and the top two
    # are often close, as in a trained model (where last-bit noise can flip a token).
    # The names and shapes are transformers' LlamaForCausalLM ([out, in] matrices).
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": matrix(n_vocab, shape.hidden, 1.0),
        "model.norm.weight": ones(shape.hidden),
        "lm_head.weight": matrix(n_vocab, shape.hidden, OUTPUT_STD),
    }
    std = shape.hidden**-0.5
    for i in range(shape.layers):
        layer = f"model.layers.{i}"
        tensors[f"{layer}.input_layernorm.weight"] = ones(shape.hidden)
        tensors[f"{layer}.self_attn.q_proj.weight"] = matrix(shape.hidden, shape.hidden, std)
        tensors[f"{layer}.self_attn.k_proj.weight"] = matrix(kv, shape.hidden, std)
        tensors[f"{layer}.self_attn.v_proj.weight"] = matrix(kv, shape.hidden, std)
        tensors[f"{layer}.self_attn.o_proj.weight"] = matrix(shape.hidden, shape.hidden, std)
        tensors[f"{layer}.post_attention_layernorm.weight"] = ones(shape.hidden)
        tensors[f"{layer}.mlp.gate_proj.weight"] = matrix(shape.ffn, shape.hidden, std)
        tensors[f"{layer}.mlp.up_proj.weight"] = matrix(shape.ffn, shape.hidden, std)
        tensors[f"{layer}.mlp.down_proj.weight"] = matrix(shape.hidden, shape.ffn, shape.ffn**-0.5)

    out.mkdir(parents=True, exist_ok=True)
    # transformers refuses safetensors without a format in their metadata.
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": None,
            "dtype": "float32",
            "head_dim": head,
            "hidden_act": "silu",
            "hidden_size": shape.hidden,
            "initializer_range": 0.02,
            "intermediate_size": shape.ffn,
            "max_position_embeddings": shape.context,
            "mlp_bias": False,
            "num_attention_heads": shape.heads,
            "num_hidden_layers": shape.layers,
            "num_key_value_heads": shape.kv_heads,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
            "tie_word_embeddings": False,
            "use_cache": True,
            "vocab_size": n_vocab,
        },
    )
    # do_sample as released chat models ship it: `transformers serve` samples only where the
    # model's generation config says so (a request's temperature above 0 does not turn it on).
    _json(out / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True})
    tokenizer.save(str(out / "tokenizer.json"))
    _json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "model_max_length": shape.context,
        },
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detinfer.engines.hf.model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write")
    parser.add_argument("--seed", type=int, default=0, help="of the weights; default %(default)s")
    defaults = ModelShape()
    for name in ("layers", "hidden", "heads", "kv_heads", "ffn", "context", "vocab"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.exit(2, f"--seed must be at least 0, got {args.seed}\n")
    if args.out.exists() and not args.out.is_dir():
        parser.exit(2, f"--out {str(args.out)!r} exists and is not a folder\n")
    shape = ModelShape(
        args.layers, args.hidden, args.heads, args.kv_heads, args.ffn, args.context, args.vocab
    )
    try:
        write_model(args.out, args.seed, shape)
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
