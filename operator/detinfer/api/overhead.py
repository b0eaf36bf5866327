"""The cost of determinism: the workload that measures it and the summary that reports it.

One definition each. `detinfer bench` (by hand, or as the benchmark Job) drives an
`OverheadWorkload` against a deterministic endpoint and a baseline (the same engine without the
determinism flag), alternating between them, and writes an `OverheadSummary`: per concurrency
level the figures of both sides and the overhead of the deterministic one. The summary follows
the rules of the validation summary: compact JSON under Kubernetes' 4096-byte limit for
termination messages, a schema version, a parse that names what is wrong.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field

from detinfer.api.base import KubeModel
from detinfer.api.constants import TERMINATION_MESSAGE_LIMIT
from detinfer.api.spec import MAX_LEVELS, OverheadWorkload
from detinfer.api.status import LevelResult, SideFigures
from detinfer.api.summary import parse_message

OVERHEAD_SCHEMA_VERSION: Literal[1] = 1
REASON_LIMIT = 300


# Defined with the spec (spec.overhead.workload) and the status (status.overhead.levels).
__all__ = [
    "MAX_LEVELS",
    "LevelResult",
    "OverheadError",
    "OverheadSummary",
    "OverheadWorkload",
    "SideFigures",
]


class OverheadError(ValueError):
    """A termination message that is not a valid overhead summary."""


class OverheadSummary(KubeModel):
    schema_version: Literal[1] = OVERHEAD_SCHEMA_VERSION
    measured: bool
    """False: the benchmark could not measure (`reason` says why); no figure below is a result."""
    reason: Annotated[str, Field(max_length=REASON_LIMIT)] = ""
    workload: OverheadWorkload
    levels: Annotated[list[LevelResult], Field(max_length=MAX_LEVELS)] = []
    headline_percent: float | None = None
    """The throughput overhead at the highest concurrency level: what determinism costs a server
    that is busy, which is what capacity is bought for."""
    headline_concurrency: int | None = None
    duration_seconds: Annotated[float, Field(ge=0)] = 0.0
    tokens_generated: Annotated[int, Field(ge=0)] = 0

    @property
    def exit_code(self) -> int:
        return 0 if self.measured else 2

    def to_termination_message(self) -> str:
        """Compact JSON of at most TERMINATION_MESSAGE_LIMIT bytes (MAX_LEVELS guarantees it)."""
        text = json.dumps(self.to_wire(), separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            raise ValueError(f"the overhead summary is {len(text.encode())} bytes")
        return text

    @classmethod
    def parse(cls, text: str | None) -> OverheadSummary:
        """Parse a termination message; OverheadError says what is wrong with it."""
        return parse_message(cls, text, OVERHEAD_SCHEMA_VERSION, OverheadError, "the benchmark")
