"""The report of a run: the verdict and why, per suite and per endpoint; and its summary.

The report is the full JSON record (`--report`, versioned by schemaVersion); the summary is the
compact ValidationSummary the operator reads from the termination message. Both come from the
same Report object, so they cannot disagree. How the verdict is decided is in verdict.py; how a
report is shown, in terminal.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from detinfer import __version__
from detinfer.api.base import KubeModel
from detinfer.api.spec import Suite
from detinfer.api.status import ServerFacts, SuiteFindings, SuiteOutcome, SuiteResult, Verdict
from detinfer.api.summary import REASON_LIMIT, ValidationSummary
from detinfer.validator.server_facts import EngineFacts
from detinfer.validator.suites import SuiteRecord, clip

REPORT_SCHEMA_VERSION: Literal[1] = 1
SUITE_NAMES = frozenset(s.value for s in Suite)


class SuiteReport(SuiteFindings):
    """One suite, or the fingerprint step, on one endpoint or combined over all endpoints: its
    findings, with the reason under the name of its outcome, its notes and what it cost.

    Made from the working SuiteRecord in one place (`of`); `to_result` is the summary's form.
    """

    outcome: SuiteOutcome = SuiteOutcome.PASSED
    skipped: str | None = None
    """Why the suite did not run."""
    could_not_test: str | None = None
    """What the outputs lacked to be evidence (no tokens, too few, logprobs not finite or
    constant); combined over endpoints, prefixed with the endpoint."""
    notes: list[str] = []
    requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    failed_endpoints: list[str] = []

    @classmethod
    def of(cls, record: SuiteRecord) -> SuiteReport:
        outcome = record.outcome
        evidence = record.evidence
        return cls(
            name=record.name,
            samples=record.samples,
            unique_outputs=record.unique_outputs,
            passed=outcome == SuiteOutcome.PASSED,
            outcome=outcome,
            first_divergence=record.first_divergence,
            skipped=record.skipped,
            could_not_test=evidence.missing if outcome == SuiteOutcome.COULD_NOT_TEST else None,
            tokens_compared=evidence.tokens,
            logprobs_compared=evidence.logprobs,
            characters_compared=evidence.characters if evidence.text_only else None,
            notes=list(record.notes),
            requests=record.requests,
            generated_tokens=record.generated_tokens,
            prompt_tokens=record.prompt_tokens,
            seconds=round(record.seconds, 3),
            failed_endpoints=list(record.failed_endpoints),
        )

    @classmethod
    def combine(cls, name: str, parts: Sequence[tuple[str, SuiteReport]]) -> SuiteReport:
        """One suite over several endpoints: `parts` are (endpoint name, its report)."""
        several = len(parts) > 1
        failing = [(n, p) for n, p in parts if p.outcome == SuiteOutcome.FAILED]
        divergence = None
        if failing:
            endpoint, first = failing[0]
            divergence = clip(
                f"{endpoint}: {first.first_divergence}" if several else str(first.first_divergence)
            )
        lacking = [(n, p) for n, p in parts if p.outcome == SuiteOutcome.COULD_NOT_TEST]
        skipped = [p.skipped for _, p in parts if p.skipped]
        all_skipped = bool(skipped) and len(skipped) == len(parts)
        if failing:
            outcome = SuiteOutcome.FAILED
        elif lacking:
            outcome = SuiteOutcome.COULD_NOT_TEST
        elif all_skipped:
            outcome = SuiteOutcome.SKIPPED
        else:
            outcome = SuiteOutcome.PASSED
        # The endpoint is named even when there is one: the reason must say where.
        missing = [f"{n}: {p.could_not_test}" for n, p in lacking]
        if len(missing) > 1:
            missing[0] += (
                f" (and {len(missing) - 1} more endpoint{'s' if len(missing) > 2 else ''})"
            )
        characters = [p.characters_compared for _, p in parts if p.characters_compared is not None]
        return cls(
            name=name,
            samples=sum(p.samples for _, p in parts),
            unique_outputs=max((p.unique_outputs for _, p in parts), default=0),
            passed=outcome == SuiteOutcome.PASSED,
            outcome=outcome,
            first_divergence=divergence,
            skipped=skipped[0] if all_skipped else None,
            could_not_test=clip(missing[0]) if missing else None,
            tokens_compared=sum(p.tokens_compared for _, p in parts),
            logprobs_compared=sum(p.logprobs_compared for _, p in parts),
            characters_compared=sum(characters) if characters else None,
            notes=[f"{n}: {note}" if several else note for n, p in parts for note in p.notes],
            requests=sum(p.requests for _, p in parts),
            generated_tokens=sum(p.generated_tokens for _, p in parts),
            prompt_tokens=sum(p.prompt_tokens for _, p in parts),
            seconds=max((p.seconds for _, p in parts), default=0.0),
            failed_endpoints=sorted({e for _, p in parts for e in p.failed_endpoints}),
        )

    def to_result(self) -> SuiteResult:
        """The findings as the summary and the status carry them: the reason by one name."""
        findings = self.model_dump(include=set(SuiteFindings.model_fields))
        reason = clip(self.skipped or self.could_not_test or "") or None
        return SuiteResult.model_validate({**findings, "reason": reason})


class EndpointReport(KubeModel):
    name: str
    url: str
    fingerprint: str | None = None
    compared_on: str | None = None
    """tokenIds+logprobs, tokenIds, tokens+logprobs, tokens or text: what was compared."""
    server: dict[str, Any] = {}
    """The named fields (server_facts.KEPT_FIELDS) of what GET /model_info and /server_info (or
    their old names /get_model_info and /get_server_info) said, and /model_info again after the
    suites; or the model of /v1/models. Nothing else of those answers: /server_info carries
    the server's keys and command line."""
    server_facts: EngineFacts | None = None
    """The facts in /server_info (version, attention backend, deterministic inference, radix
    cache, TP size) and /model_info (model path, weight version)."""
    mismatches: list[str] = []
    """How /server_info and /model_info contradict the expectations (--expect-*), and how the
    model changed during the run."""
    unchecked: list[str] = []
    """Expectations of /model_info the server's answers could not confirm (noted, no failure)."""
    served_by: dict[str, int] = {}
    """What the answers said served them (OpenAI's system_fingerprint, Gemini's modelVersion,
    Anthropic's model) and how many said each; more than one is named in the reason."""
    suites: list[SuiteReport] = []
    requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    latency_p50_milliseconds: float | None = None
    latency_p95_milliseconds: float | None = None
    stopped_in: str | None = None
    """Where this endpoint's run was when the run stopped without a verdict."""


class Report(KubeModel):
    """Everything a run found. `to_summary()` is what the operator gets."""

    schema_version: Literal[1] = REPORT_SCHEMA_VERSION
    kind: Literal["ValidationReport"] = "ValidationReport"
    detinfer_version: str = __version__
    verdict: Verdict
    reason: str
    """One line: the first divergence, the mismatch, or why the run could not test."""
    exit_code: int
    protocol: str
    compared_on: str | None = None
    options: dict[str, Any] = {}
    started_at: str
    duration_seconds: float
    fingerprint: str | None = None
    """The fingerprint all endpoints agree on; None when they differ, when the fingerprint
    prompts gave no evidence on some endpoint, or when the run could not test."""
    expected_fingerprint: str | None = None
    failed_endpoints: list[str] = []
    suites: list[SuiteReport] = []
    """The selected suites, each combined over the endpoints (the fingerprint step first)."""
    endpoints: list[EndpointReport] = []
    stopped: bool = False
    """True when an error or the deadline ended the run before every suite ran everywhere."""
    tokens_compared: int = 0
    """Output tokens compared over every step, the fingerprint included: what a verdict rests
    on (the suites' own counts say which)."""
    logprobs_compared: int = 0
    characters_compared: int | None = None
    requests: int = 0
    tokens_used: int = 0
    """Prompt plus generated tokens, as the servers counted them."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    latency_p50_milliseconds: float | None = None
    latency_p95_milliseconds: float | None = None
    tokens_per_second: float | None = None
    """Generated tokens per second of the suites, over all endpoints at once."""
    server: EngineFacts | None = None
    """The facts of /server_info and /model_info that every endpoint agrees on."""
    cache_nonce: str | None = None
    """The run's text at the start of the Prefix and RadixCache prompts (never seen before)."""
    internal_error: str | None = None
    """The traceback of an unexpected error (the reason has its last line)."""

    def to_summary(self) -> ValidationSummary:
        # After a stop only part of the suites ran: they are in the report, not the summary.
        suites = (
            [] if self.stopped else [s.to_result() for s in self.suites if s.name in SUITE_NAMES]
        )
        return ValidationSummary(
            verdict=self.verdict,
            reason=self.reason[:REASON_LIMIT],
            fingerprint=None if self.verdict == Verdict.COULD_NOT_TEST else self.fingerprint,
            suites=suites,
            failed_endpoints=list(self.failed_endpoints),
            compared_on=self.compared_on,
            tokens_compared=self.tokens_compared,
            logprobs_compared=self.logprobs_compared,
            characters_compared=self.characters_compared,
            duration_seconds=round(self.duration_seconds, 3),
            tokens_used=self.tokens_used,
            latency_p50_milliseconds=self.latency_p50_milliseconds,
            latency_p95_milliseconds=self.latency_p95_milliseconds,
            tokens_per_second=self.tokens_per_second,
            server=self._summary_facts(),
        )

    def _summary_facts(self) -> ServerFacts | None:
        """The summary's ServerFacts (api/status.py) have no room for the model's fields."""
        facts = self.server.to_server_facts() if self.server else None
        return facts if facts and facts.to_wire() else None

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=False, default=str) + "\n"
