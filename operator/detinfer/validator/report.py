"""The report of a run: the verdict and why, per suite and per endpoint; and its summary.

The report is the full JSON record (`--report`, versioned by schemaVersion); the summary is the
compact ValidationSummary the operator reads from the termination message. Both come from the
same Report object, so they cannot disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from detinfer import __version__
from detinfer.api.base import KubeModel
from detinfer.api.spec import Suite
from detinfer.api.status import SuiteOutcome, SuiteResult, Verdict
from detinfer.api.summary import ValidationSummary
from detinfer.validator.config import ValidatorConfig
from detinfer.validator.suites import SuiteRecord, clip

REPORT_SCHEMA_VERSION = 1
REASON_LIMIT = 1024
SUITE_NAMES = frozenset(s.value for s in Suite)


class SuiteReport(KubeModel):
    """One suite: on one endpoint, or combined over all endpoints."""

    name: str
    """A Suite, or Fingerprint."""
    samples: int = 0
    """Outputs compared."""
    unique_outputs: int = 0
    """Distinct outputs of the most varied prompt; 1 is deterministic, 0 when skipped."""
    passed: bool = True
    """True only when outcome is Passed."""
    outcome: SuiteOutcome = SuiteOutcome.PASSED
    first_divergence: str | None = None
    skipped: str | None = None
    """Why the suite did not run."""
    could_not_test: str | None = None
    """What the outputs lacked to be evidence (no tokens, too few, logprobs not finite or
    constant); combined over endpoints, prefixed with the endpoint."""
    tokens_compared: int = 0
    logprobs_compared: int = 0
    characters_compared: int | None = None
    """Only where a server gave text alone."""
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
        return SuiteResult(
            name=Suite(self.name),
            samples=self.samples,
            unique_outputs=self.unique_outputs,
            passed=self.passed,
            first_divergence=self.first_divergence,
            outcome=self.outcome,
            tokens_compared=self.tokens_compared,
            logprobs_compared=self.logprobs_compared,
            characters_compared=self.characters_compared,
            reason=clip(self.skipped or self.could_not_test or "") or None,
        )


class EndpointReport(KubeModel):
    name: str
    url: str
    fingerprint: str | None = None
    compared_on: str | None = None
    """tokenIds+logprobs, tokenIds, tokens+logprobs, tokens or text: what was compared."""
    server: dict[str, Any] = {}
    """What GET /get_model_info and /get_server_info (or /v1/models) said."""
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
        )

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=False, default=str) + "\n"


def decide(
    config: ValidatorConfig,
    suites: Sequence[SuiteReport],
    fingerprints: dict[str, str | None],
) -> tuple[Verdict, str, list[str], str | None]:
    """The verdict of a run that ran every suite on every endpoint: (verdict, reason, failed,
    fingerprint).

    A failure needs only the outputs that show it, so failures come first: nondeterminism
    found by a suite, fingerprints that differ between endpoints, then a fingerprint that is
    not the expected one. Then "could not test" where some suite's outputs (the fingerprint
    step's included) held no evidence. Deterministic only when every suite that ran passed.
    An endpoint whose fingerprint prompts gave no evidence has no fingerprint (None).
    """
    expected = config.expected_fingerprint
    distinct = sorted({fp for fp in fingerprints.values() if fp})
    everyone = all(fingerprints.values())
    common = distinct[0] if len(distinct) == 1 and everyone else None
    mismatched = [n for n, fp in fingerprints.items() if expected and fp and fp != expected]
    failed_suites = [s for s in suites if s.outcome == SuiteOutcome.FAILED]
    if failed_suites:
        first = failed_suites[0]
        more = len(failed_suites) - 1
        reason = f"not deterministic: {first.name}: {first.first_divergence}"
        if more:
            reason += f" (and {more} more suite{'s' if more > 1 else ''} failed)"
        failed = sorted({e for s in failed_suites for e in s.failed_endpoints} | set(mismatched))
        return Verdict.NOT_DETERMINISTIC, clip(reason, REASON_LIMIT), failed, common
    if expected and mismatched:
        got = ", ".join(f"{n} gave {fingerprints[n]}" for n in mismatched)
        reason = f"fingerprint mismatch: expected {expected}; {got}"
        return Verdict.FINGERPRINT_MISMATCH, clip(reason, REASON_LIMIT), mismatched, common
    if len(distinct) > 1:
        got = ", ".join(f"{n} {fp or 'none'}" for n, fp in fingerprints.items())
        reason = f"not deterministic: the endpoints gave different fingerprints: {got}"
        return Verdict.NOT_DETERMINISTIC, clip(reason, REASON_LIMIT), sorted(fingerprints), None
    lacking = [s for s in suites if s.outcome == SuiteOutcome.COULD_NOT_TEST]
    if lacking:
        first = lacking[0]
        reason = f"could not test: {first.name} on {first.could_not_test}"
        if len(lacking) > 1:
            more = len(lacking) - 1
            reason += f" (and {more} more suite{'s' if more > 1 else ''} could not test)"
        return Verdict.COULD_NOT_TEST, clip(reason, REASON_LIMIT), [], None
    ran = [s for s in suites if s.name in SUITE_NAMES and s.outcome == SuiteOutcome.PASSED]
    samples = sum(s.samples for s in ran)
    where = _names(list(fingerprints))
    if ran:
        what = (
            f"{len(ran)} suite{'s' if len(ran) > 1 else ''} "
            f"({', '.join(s.name for s in ran)}) gave one output per prompt in "
            f"{samples} samples on {where}"
        )
    else:
        what = f"no suite ran; the fingerprint prompts were answered on {where}"
    if expected:
        what += "; fingerprint as expected"
    return Verdict.DETERMINISTIC, clip(f"deterministic: {what}", REASON_LIMIT), [], common


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _names(names: list[str]) -> str:
    return (
        ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} and {len(names) - 3} more"
    )


SUITE_COLUMNS = (
    "suite",
    "samples",
    "unique",
    "compared",
    "result",
    "tokens",
    "seconds",
    "first divergence / note",
)
"""compared: output tokens compared; tokens: tokens generated."""
RESULT_WORDS = {
    SuiteOutcome.PASSED: "passed",
    SuiteOutcome.FAILED: "FAILED",
    SuiteOutcome.SKIPPED: "skipped",
    SuiteOutcome.COULD_NOT_TEST: "could not test",
}


def suite_row(suite) -> tuple[str, ...]:
    """One suite as the report's table shows it."""
    if suite.outcome == SuiteOutcome.SKIPPED:
        note = suite.skipped or ""
    elif suite.outcome == SuiteOutcome.COULD_NOT_TEST:
        note = suite.could_not_test or ""
    else:
        note = suite.first_divergence or "; ".join(suite.notes)
    return (
        suite.name,
        str(suite.samples),
        str(suite.unique_outputs),
        str(suite.tokens_compared),
        RESULT_WORDS[suite.outcome],
        str(suite.generated_tokens),
        f"{suite.seconds:.1f}",
        note,
    )


def render_text(report: Report) -> str:
    """The report as a plain table for a log."""
    rows = [SUITE_COLUMNS, *(suite_row(suite) for suite in report.suites)]
    cells = len(SUITE_COLUMNS) - 1  # the note, last, is not padded
    left = (0, SUITE_COLUMNS.index("result"))
    widths = [max(len(r[i]) for r in rows) for i in range(cells)]
    lines = [
        "  ".join(
            [
                cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                for i, cell in enumerate(row[:cells])
            ]
            + [row[cells]]
        ).rstrip()
        for row in rows
    ]
    lines.append("")
    lines.extend(summary_lines(report))
    return "\n".join(lines)


def summary_lines(report: Report) -> list[str]:
    lines = []
    for endpoint in report.endpoints:
        model = _model_of(endpoint.server)
        fp = endpoint.fingerprint or "none"
        lines.append(
            f"{endpoint.name}: {endpoint.url}"
            + (f", model {model}" if model else "")
            + f", compared on {endpoint.compared_on or 'nothing yet'}, fingerprint {fp}"
        )
    lat = (
        f"latency p50 {report.latency_p50_milliseconds:.1f} ms, "
        f"p95 {report.latency_p95_milliseconds:.1f} ms; "
        if report.latency_p50_milliseconds is not None
        and report.latency_p95_milliseconds is not None
        else ""
    )
    tps = f"{report.tokens_per_second:.0f} tokens/s; " if report.tokens_per_second else ""
    compared = f"{report.tokens_compared} tokens and {report.logprobs_compared} logprobs compared; "
    lines.append(
        f"{compared}{lat}{tps}{report.generated_tokens} tokens generated, {report.prompt_tokens} prompt "
        f"tokens, {report.requests} requests in {report.duration_seconds:.1f} s"
    )
    return lines


def _model_of(server: dict[str, Any]) -> str | None:
    info = server.get("modelInfo")
    if isinstance(info, dict) and isinstance(info.get("model_path"), str):
        return info["model_path"]
    model = server.get("model")
    return model if isinstance(model, str) else None
