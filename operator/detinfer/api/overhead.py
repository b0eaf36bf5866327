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

from pydantic import Field, model_validator

from detinfer.api.base import KubeModel
from detinfer.api.constants import TERMINATION_MESSAGE_LIMIT
from detinfer.api.summary import parse_message

OVERHEAD_SCHEMA_VERSION: Literal[1] = 1
MAX_LEVELS = 6
"""Concurrency levels in one workload: the summary of six still fits in 4096 bytes."""
REASON_LIMIT = 300


class OverheadError(ValueError):
    """A termination message that is not a valid overhead summary."""


class OverheadWorkload(KubeModel):
    """A fixed workload, sent the same to both endpoints."""

    concurrency: Annotated[
        list[Annotated[int, Field(ge=1, le=256)]], Field(min_length=1, max_length=MAX_LEVELS)
    ] = [1, 8]
    """Concurrency levels: requests in flight at once; each level is measured separately."""
    requests: Annotated[int, Field(ge=1, le=4096)] = 32
    """Requests per level, per round and per endpoint."""
    input_tokens: Annotated[int, Field(ge=1, le=32768)] = 256
    """Prompt length in tokens (token ids sent as input_ids)."""
    output_tokens: Annotated[int, Field(ge=1, le=32768)] = 128
    """Generated tokens per request (ignore_eos, so every request generates exactly this many)."""
    rounds: Annotated[int, Field(ge=1, le=16)] = 3
    """Rounds per level; the order of the two endpoints alternates from round to round, so drift
    of the machine hits both; the spread of tokens/s over the rounds is reported."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seeds the prompts' token ids; each round gets new prompts (no cached prefix helps either
    side), the same for both endpoints."""

    @model_validator(mode="after")
    def _distinct_levels(self) -> OverheadWorkload:
        if len(set(self.concurrency)) != len(self.concurrency):
            raise ValueError(f"concurrency: {self.concurrency} repeats a level")
        return self


class SideFigures(KubeModel):
    """One endpoint at one concurrency level, over all rounds. Latencies in milliseconds,
    nearest-rank percentiles over every request (TTFT, end to end) or every token gap (ITL)."""

    ttft_p50_ms: Annotated[float, Field(ge=0)]
    ttft_p95_ms: Annotated[float, Field(ge=0)]
    itl_p50_ms: Annotated[float, Field(ge=0)]
    itl_p95_ms: Annotated[float, Field(ge=0)]
    e2e_p50_ms: Annotated[float, Field(ge=0)]
    e2e_p95_ms: Annotated[float, Field(ge=0)]
    tokens_per_second: Annotated[float, Field(ge=0)]
    """Output tokens per second: the median over the rounds of generated tokens / wall time."""
    tokens_per_second_spread: Annotated[float, Field(ge=0)]
    """Max minus min of the rounds' tokens/s: the run-to-run noise of this figure."""


class LevelResult(KubeModel):
    concurrency: Annotated[int, Field(ge=1)]
    deterministic: SideFigures
    baseline: SideFigures
    throughput_overhead_percent: float
    """How much more time the deterministic endpoint needs for the same tokens:
    (baseline tokens/s / deterministic tokens/s - 1) x 100."""
    e2e_p50_overhead_percent: float
    """(deterministic / baseline end-to-end p50 - 1) x 100."""
    ttft_p50_overhead_percent: float
    itl_p50_overhead_percent: float


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
