"""What the outputs of one suite on one endpoint really hold as evidence, and what they lack.

Identical outputs prove nothing when there is nothing in them: a server that generates no
tokens, stops after one where 64 were asked, or gives logprobs that are NaN, infinite or one
value everywhere "agrees with itself" at every batch size. A suite passes only on outputs that
hold tokens (or text, where a server gives nothing else), as many as were asked where the
request could not stop early, and finite logprobs that vary somewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from detinfer.validator.compare import Basis, Output, float_bits


@dataclass
class Evidence:
    """Counts what was compared and keeps the first sign of each kind of missing evidence."""

    samples: int = 0
    tokens: int = 0
    """Output tokens (ids or strings) compared."""
    logprobs: int = 0
    """Finite logprobs compared: output tokens, and prompt positions where asked for."""
    characters: int = 0
    """Characters of text compared, for outputs with no tokens (the text basis)."""
    text_only: bool = False
    cut_short: int = 0
    first_cut_short: str | None = None
    not_finite: int = 0
    first_not_finite: str | None = None
    _values: set[int | None] = field(default_factory=set)
    """Up to two distinct logprob bit patterns: two are enough to tell they vary."""
    _first_value: float | None = None
    _positions: set[tuple] = field(default_factory=set)
    """Up to two distinct (prompt, position) pairs that carried a logprob."""

    def add(self, key: tuple, output: Output, label: str) -> None:
        """One sample: `key` names its prompt and sampling, `label` where it was sent."""
        self.samples += 1
        if output.tokens is None or output.basis == Basis.TEXT:
            self.text_only = True
            self.characters += len(output.text)
        else:
            self.tokens += len(output.tokens)
        if output.cut_short is not None:
            self.cut_short += 1
            if self.first_cut_short is None:
                self.first_cut_short = f"{label}: {output.cut_short}"
        for i, value in enumerate(output.logprobs or ()):
            if i in output.logprob_gaps:
                continue
            self._logprob(value, (key, "output", i), f"{label}: {_show(value)} at output token {i}")
        for i, (value, _) in enumerate(output.input_logprobs or ()):
            position = output.logprob_start + i
            if value is None and position == 0:
                continue  # the first prompt token has nothing before it to be predicted from
            self._logprob(
                value,
                (key, "prompt", position),
                f"{label}: {_show(value)} at prompt position {position}",
            )

    def _logprob(self, value: float | None, position: tuple, where: str) -> None:
        # A token the model chose (greedily or by sampling) had a probability above 0, so its
        # logprob is finite; null, NaN and infinities are no measurement of the kernels.
        if value is None or not math.isfinite(value):
            self.not_finite += 1
            if self.first_not_finite is None:
                self.first_not_finite = where
            return
        self.logprobs += 1
        if len(self._values) < 2:
            if not self._values:
                self._first_value = value
            self._values.add(float_bits(value))
        if len(self._positions) < 2:
            self._positions.add(position)

    @property
    def missing(self) -> str | None:
        """What these outputs lack to count as evidence, in words; None when nothing."""
        if self.samples == 0:
            return "no samples were compared"
        if self.tokens == 0 and self.characters == 0:
            what = "output tokens" if not self.text_only else "output text"
            detail = f" ({self.first_cut_short})" if self.first_cut_short else ""
            return f"no {what} in {self.samples} samples{detail}"
        if self.cut_short:
            return (
                f"{self.cut_short} of {self.samples} samples ended early ({self.first_cut_short})"
            )
        if self.not_finite:
            total = self.not_finite + self.logprobs
            return (
                f"{self.not_finite} of {total} logprobs are not finite numbers "
                f"({self.first_not_finite})"
            )
        # One prompt position seen over and over (one token per sample, one prompt) may give
        # one value legitimately; the same value at every position of every prompt is not a
        # model's output but a constant.
        if len(self._values) == 1 and len(self._positions) > 1:
            return f"all {self.logprobs} logprobs are the same value ({self._first_value!r})"
        return None


def _show(value: float | None) -> str:
    return "null" if value is None else repr(value)
