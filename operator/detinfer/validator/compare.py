"""How two outputs are compared: token ids, logprobs bit for bit, text only as a last resort."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from detinfer.validator.prompts import FINGERPRINT_SCHEME

Prompt = str | tuple[int, ...]
"""A prompt: text, or token ids (the SGLang protocol only)."""


class Basis(StrEnum):
    """What an output is compared on, from the most to the least precise."""

    TOKEN_IDS = "tokenIds"
    """Token ids (and logprobs where the server gives them): the SGLang protocol."""
    TOKENS = "tokens"
    """Token strings (and logprobs where given): the OpenAI protocol, which has no ids."""
    TEXT = "text"
    """Only the text: a server that returns no tokens at all."""


@dataclass(frozen=True)
class Output:
    """One generated sequence as the server returned it."""

    text: str
    tokens: tuple[int, ...] | tuple[str, ...] | None
    """Token ids (SGLang) or token strings (OpenAI); None when the server gave only text."""
    logprobs: tuple[float | None, ...] | None = None
    """Logprob of each output token, exactly as parsed from JSON; None when not given."""
    input_logprobs: tuple[tuple[float | None, int], ...] | None = None
    """(logprob, token id) of prompt positions, where asked for (RadixCache)."""
    logprob_start: int = 0
    """Prompt position of input_logprobs[0]."""
    finish_reason: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    basis: Basis = Basis.TOKEN_IDS
    logprob_gaps: tuple[int, ...] = ()
    """Output positions the server gave no logprob for, and says so by leaving them out
    (llama.cpp drops the entry of a token that ends inside a UTF-8 character); their logprob
    is None, neither compared nor a fault."""
    unlisted_tokens: int = 0
    """Tokens the server generated but did not list (llama-server's chat-shaped logprobs leave
    out a token that ends inside a UTF-8 character, at an unknown position); the text, which
    holds them, is then compared too."""
    cut_short: str | None = None
    """Why the output has fewer tokens than asked where the request could not stop early
    (e.g. `1 of 64 tokens, finish reason 'stop' although ignore_eos was asked`); such an output
    is no evidence."""

    @property
    def key(self) -> tuple:
        """Equal for two outputs exactly when they are the same to the last bit."""
        if self.tokens is None or self.basis == Basis.TEXT:
            return ("text", self.text)
        inputs = (
            None
            if self.input_logprobs is None
            else tuple((float_bits(lp), tid) for lp, tid in self.input_logprobs)
        )
        logprobs = None if self.logprobs is None else tuple(float_bits(x) for x in self.logprobs)
        text = self.text if self.unlisted_tokens else None
        return ("tokens", self.tokens, logprobs, inputs, text)


def float_bits(value: float | None) -> int | None:
    """The IEEE 754 bits of a float: -0.0 differs from 0.0, and NaN equals the same NaN."""
    if value is None:
        return None
    return struct.unpack("<Q", struct.pack("<d", float(value)))[0]


def describe_divergence(reference: Output, other: Output) -> str | None:
    """Where `other` first differs from `reference`, in words; None when they are identical.

    Prompt logprobs come first (they are computed before any output token), then output
    logprobs that differ while the tokens still agree, then the first differing token.
    """
    if reference.key == other.key:
        return None
    parts: list[str] = []
    a_in, b_in = reference.input_logprobs or (), other.input_logprobs or ()
    if len(a_in) != len(b_in):
        parts.append(f"{len(a_in)} vs {len(b_in)} prompt logprobs")
    else:
        for i, ((lp_a, id_a), (lp_b, id_b)) in enumerate(zip(a_in, b_in, strict=True)):
            if id_a != id_b or float_bits(lp_a) != float_bits(lp_b):
                where = f"prompt position {reference.logprob_start + i}"
                if id_a != id_b:
                    parts.append(f"{where}: id {id_a} vs id {id_b}")
                else:
                    parts.append(f"logprob at {where} (id {id_a}): {lp_a!r} vs {lp_b!r}")
                break
    if reference.tokens is None or other.tokens is None:
        if reference.text != other.text:
            parts.append(_text_divergence(reference.text, other.text))
        return "; ".join(parts) or "outputs differ"

    a, b = reference.tokens, other.tokens
    first_token = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if first_token is None and len(a) != len(b):
        first_token = min(len(a), len(b))
    logprob_limit = first_token if first_token is not None else len(a)
    first_logprob = None
    if reference.logprobs is not None and other.logprobs is not None:
        first_logprob = next(
            (
                i
                for i, (x, y) in enumerate(
                    zip(reference.logprobs[:logprob_limit], other.logprobs, strict=False)
                )
                if float_bits(x) != float_bits(y)
            ),
            None,
        )
    if first_logprob is not None:
        x, y = reference.logprobs[first_logprob], other.logprobs[first_logprob]  # type: ignore[index]
        tail = (
            f"tokens identical up to token {first_token}"
            if first_token is not None
            else "tokens identical"
        )
        parts.append(
            f"logprob of output token {first_logprob} ({_token(a[first_logprob])}): "
            f"{x!r} vs {y!r} ({tail})"
        )
    if first_token is not None:
        if first_token < len(a) and first_token < len(b):
            parts.append(
                f"output token {first_token}: {_token(a[first_token])} vs {_token(b[first_token])}"
            )
        else:
            parts.append(
                f"{len(a)} vs {len(b)} output tokens "
                f"(finish reason {reference.finish_reason} vs {other.finish_reason})"
            )
    if not parts and reference.text != other.text:
        # Only the text differs: a token the server did not list (unlisted_tokens).
        parts.append(_text_divergence(reference.text, other.text))
    return "; ".join(parts) or "outputs differ"


def _token(token: int | str) -> str:
    return f"token {token!r}" if isinstance(token, str) else f"id {token}"


def _text_divergence(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"text differs at character {i}: {a[i : i + 20]!r} vs {b[i : i + 20]!r}"


def fingerprint(outputs: Sequence[Output]) -> str:
    """sha256 over the canonical outputs (token ids) of the fingerprint prompts.

    Only tokens enter it (text where a server gives no tokens), with the scheme and the basis:
    no timing, no ids of requests, no logprobs. A deterministic engine gives the same value on
    every restart and replica; another model gives another.
    """
    basis = outputs[0].basis if outputs else Basis.TEXT
    payload = {
        "scheme": FINGERPRINT_SCHEME,
        "basis": basis.value,
        "outputs": [list(o.tokens) if o.tokens is not None else o.text for o in outputs],
    }
    canonical = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
