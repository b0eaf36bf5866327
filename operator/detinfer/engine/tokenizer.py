"""A byte-level tokenizer: ids 0-255 are bytes, then a few special tokens."""

from __future__ import annotations

BOS = 256
EOS = 257
PAD = 258
VOCAB_SIZE = 260  # 259 used; one spare keeps the size even
SPECIAL = {BOS: "<s>", EOS: "</s>", PAD: "<pad>", 259: "<unused>"}


def encode(text: str, add_bos: bool = True) -> list[int]:
    ids = list(text.encode("utf-8"))
    return [BOS, *ids] if add_bos else ids


def decode(ids: list[int]) -> str:
    """Bytes of the byte tokens; special tokens are dropped; invalid UTF-8 becomes U+FFFD."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def token_text(token: int) -> str:
    return SPECIAL.get(token) or bytes([token]).decode("latin-1")
