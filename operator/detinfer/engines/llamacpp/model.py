"""Write a small llama-architecture GGUF with random weights and a real tokenizer.

llama-server needs a model; downloading one is slow and pins the tests to a host. A few layers
of seeded random weights load in well under a second and generate fast on a CPU, and a
tokenizer copied from one of the vocab-only GGUF files that llama.cpp ships
(`models/ggml-vocab-*.gguf`, kept by hack/build-llama-server.sh) makes the prompts real text
counted in real tokens. The same seed writes the same file, byte for byte.

    python -m detinfer.engines.llamacpp.model --out tiny.gguf --seed 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from detinfer.engines.llamacpp import vocab_file

OUTPUT_STD = 0.2
"""Of the output projection's weights: logits of standard deviation about 0.2 * sqrt(hidden)."""


@dataclass(frozen=True)
class ModelShape:
    """The model's size; the vocabulary comes from the tokenizer file."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    context: int = 8192
    """Long enough for the validator's longest prompt (4,097 characters) in each of 4 slots."""

    def check(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "ffn", "context"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.hidden % self.heads:
            raise ValueError(f"--hidden {self.hidden} is not a multiple of --heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"--heads {self.heads} is not a multiple of --kv-heads {self.kv_heads}"
            )
        if (self.hidden // self.heads) % 2:
            raise ValueError(f"the head size {self.hidden // self.heads} must be even (RoPE)")


def tokenizer_fields(vocab: Path) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
    """The `tokenizer.*` key-values of a GGUF file: (key, value, type, array item type)."""
    try:
        reader = GGUFReader(vocab)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--vocab {str(vocab)!r}: cannot read it as GGUF ({exc})") from None
    fields = []
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        item = field.types[-1] if kind == GGUFValueType.ARRAY else None
        fields.append((name, field.contents(), kind, item))
    if not any(name == "tokenizer.ggml.tokens" for name, *_ in fields):
        raise ValueError(f"--vocab {str(vocab)!r}: no tokenizer.ggml.tokens in it")
    return fields


def write_model(out: Path, vocab: Path, seed: int, shape: ModelShape = ModelShape()) -> Path:
    """Write the model to `out`: 2-D weights in f16 (what llama.cpp's f16 files hold), norms in
    f32. The output projection is its own matrix: tied to the token embedding, a model this
    shallow repeats its input token forever (the embedding dominates the residual)."""
    shape.check()
    fields = tokenizer_fields(vocab)
    n_vocab = len(next(value for name, value, *_ in fields if name == "tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    head = shape.hidden // shape.heads

    def matrix(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)

    writer = GGUFWriter(out, "llama")
    writer.add_name(f"detinfer random llama (seed {seed})")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    for name, value, kind, item in fields:
        writer.add_key_value(name, value, kind, sub_type=item)

    # Embeddings of unit scale and 1/sqrt(fan-in) elsewhere keep activations of order 1; the
    # output's scale spreads the logits over a few units, so greedy picks vary and the top two
    # are often close, as in a trained model (where last-bit noise can flip a token).
    writer.add_tensor("token_embd.weight", matrix(n_vocab, shape.hidden, 1.0))
    writer.add_tensor("output_norm.weight", np.ones(shape.hidden, dtype=np.float32))
    writer.add_tensor("output.weight", matrix(n_vocab, shape.hidden, OUTPUT_STD))
    for i in range(shape.layers):
        std, kv = shape.hidden**-0.5, shape.kv_heads * head
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(shape.hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(shape.hidden, shape.hidden, std))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv, shape.hidden, std))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv, shape.hidden, std))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(shape.hidden, shape.hidden, std))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(shape.hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(shape.ffn, shape.hidden, std))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(shape.ffn, shape.hidden, std))
        writer.add_tensor(
            f"blk.{i}.ffn_down.weight", matrix(shape.hidden, shape.ffn, shape.ffn**-0.5)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detinfer.engines.llamacpp.model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="the GGUF file to write")
    parser.add_argument("--seed", type=int, default=0, help="of the weights; default %(default)s")
    parser.add_argument(
        "--vocab",
        type=Path,
        default=None,
        help=f"a vocab-only GGUF to copy the tokenizer from (default: {vocab_file()})",
    )
    defaults = ModelShape()
    for name in ("layers", "hidden", "heads", "kv_heads", "ffn", "context"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    vocab = args.vocab or vocab_file()
    if not vocab.is_file():
        parser.exit(2, f"--vocab {str(vocab)!r}: no such file (run hack/build-llama-server.sh)\n")
    if args.seed < 0:
        parser.exit(2, f"--seed must be at least 0, got {args.seed}\n")
    shape = ModelShape(args.layers, args.hidden, args.heads, args.kv_heads, args.ffn, args.context)
    try:
        write_model(args.out, vocab, args.seed, shape)
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
