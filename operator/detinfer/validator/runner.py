"""One validation run: every endpoint at once, under one deadline, always ending in a Report.

Whatever happens (an endpoint down, a malformed answer, the deadline, a bug) the run returns a
Report; only its verdict says whether it could test.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from detinfer.api.spec import Suite
from detinfer.api.status import Verdict
from detinfer.api.summary import REASON_LIMIT
from detinfer.percentile import percentile
from detinfer.validator.config import ValidatorConfig
from detinfer.validator.errors import CouldNotTest
from detinfer.validator.protocols import make_client
from detinfer.validator.report import EndpointReport, Report, SuiteReport
from detinfer.validator.schedule import FINGERPRINT, suite_plans
from detinfer.validator.server_facts import common_facts
from detinfer.validator.suites import EndpointRun, Progress, clip, cross_replica
from detinfer.validator.verdict import decide


async def run_validation(config: ValidatorConfig, progress: Progress | None = None) -> Report:
    """Run the fingerprint and the selected suites on every endpoint and judge them."""
    progress = progress or Progress()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    runs: list[EndpointRun] = []
    error: str | None = None
    detail: str | None = None
    deadline = asyncio.timeout(config.timeout_seconds)
    # One per run, shared by the endpoints: the cache suites' prompts are new to every server.
    nonce = secrets.token_hex(8)
    try:
        runs = [
            EndpointRun(make_client(e, config), config, progress, nonce)
            for e in config.endpoint_specs
        ]
        progress.begin({r.name: sum(p.requests for p in suite_plans(config)) for r in runs})
        async with contextlib.AsyncExitStack() as clients:
            for run in runs:
                await clients.enter_async_context(run.client)
            async with deadline:
                # Every endpoint is held to the expectations before any suite runs anywhere: a
                # wrong deployment is the verdict, whatever its outputs would have been.
                async with asyncio.TaskGroup() as group:
                    for run in runs:
                        group.create_task(run.prepare())
                if not any(r.mismatches for r in runs):
                    async with asyncio.TaskGroup() as group:
                        for run in runs:
                            group.create_task(run.run_suites())
                    # After every endpoint's suites: a weight update during the run (on any
                    # endpoint, CrossReplica compares them all) leaves no output as evidence.
                    async with asyncio.TaskGroup() as group:
                        for run in runs:
                            group.create_task(run.confirm_model())
    except BaseException as exc:  # every failure becomes a CouldNotTest report
        if isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise
        cause = _first_cause(exc)
        if isinstance(cause, TimeoutError) and deadline.expired():
            where = "; ".join(f"{r.name} in {r.current}" for r in runs if not r.finished)
            error = f"timed out after {config.timeout_seconds:g} s (--timeout-seconds)" + (
                f", {where}" if where else ""
            )
        elif isinstance(cause, CouldNotTest):
            error = str(cause)
        else:
            error = f"internal error: {type(cause).__name__}: {cause}"
            detail = "".join(traceback.format_exception(cause))
    finally:
        progress.end()
    report = build_report(config, runs, started_at, time.monotonic() - started, error, detail)
    return report.model_copy(update={"cache_nonce": nonce})


def build_report(
    config: ValidatorConfig,
    runs: Sequence[EndpointRun],
    started_at: datetime,
    duration: float,
    error: str | None,
    detail: str | None = None,
) -> Report:
    endpoint_reports = [_endpoint_report(r, stopped=error is not None) for r in runs]
    mismatched = [r for r in runs if r.mismatches]
    names = [FINGERPRINT, *(s.value for s in Suite if s in config.suites)]
    suites = []
    for name in names:
        parts = [(e.name, s) for e in endpoint_reports for s in e.suites if s.name == name]
        if name == Suite.CROSS_REPLICA.value and error is None and not mismatched:
            suites.append(SuiteReport.of(cross_replica(runs, config.expected_fingerprint)))
        elif parts:
            suites.append(SuiteReport.combine(name, parts))
    fingerprints = {e.name: e.fingerprint for e in endpoint_reports}
    failed: list[str]
    if error is not None:
        verdict, reason, failed = Verdict.COULD_NOT_TEST, f"could not test: {error}", []
        common = None
    elif mismatched:
        # No suite ran anywhere, or they ran on a model that changed under them: no endpoint
        # passed, all of them fail (fail closed).
        verdict, failed, common = Verdict.SERVER_MISMATCH, [r.name for r in runs], None
        after = any(r.records for r in runs)
        reason = clip(
            "server mismatch: "
            + "; ".join(f"{r.name}: {', '.join(r.mismatches)}" for r in mismatched)
            + ("; found after the suites, whose outputs are no evidence" if after else "")
            + ("" if after else "; the suites did not run"),
            REASON_LIMIT,
        )
    else:
        verdict, reason, failed, common = decide(config, suites, fingerprints)
    changed = [
        f"{r.name}: "
        + ", ".join(f"{k!r} ({n} answers)" for k, n in r.client.served_by.most_common())
        for r in runs
        if len(r.client.served_by) > 1
    ]
    if changed and error is None:
        # A finding whatever the verdict: outputs of two backends were compared as one server's.
        reason += "; the answers named more than one backend (" + "; ".join(changed) + ")"
    latencies = [lat for r in runs for lat in r.client.latencies]
    generated = sum(r.client.generated_tokens for r in runs)
    prompt = sum(r.client.prompt_tokens for r in runs)
    busy = max((sum(s.seconds for s in e.suites) for e in endpoint_reports), default=0.0)
    bases = {e.compared_on for e in endpoint_reports if e.compared_on}
    characters = [s.characters_compared for s in suites if s.characters_compared is not None]
    return Report(
        verdict=verdict,
        reason=" ".join(reason.split()),
        exit_code=verdict.exit_code,
        protocol=config.protocol.value,
        compared_on=bases.pop() if len(bases) == 1 else None,
        options=config.options(),
        started_at=started_at.isoformat(timespec="seconds"),
        duration_seconds=round(duration, 3),
        fingerprint=common,
        expected_fingerprint=config.expected_fingerprint,
        failed_endpoints=failed,
        suites=suites,
        endpoints=endpoint_reports,
        stopped=error is not None,
        tokens_compared=sum(s.tokens_compared for s in suites),
        logprobs_compared=sum(s.logprobs_compared for s in suites),
        characters_compared=sum(characters) if characters else None,
        requests=sum(r.client.requests for r in runs),
        tokens_used=generated + prompt,
        prompt_tokens=prompt,
        generated_tokens=generated,
        latency_p50_milliseconds=_ms(_percentile(latencies, 50)),
        latency_p95_milliseconds=_ms(_percentile(latencies, 95)),
        tokens_per_second=round(generated / busy, 1) if busy > 0 and generated else None,
        server=common_facts([r.facts for r in runs]),
        internal_error=detail,
    )


def _endpoint_report(run: EndpointRun, stopped: bool) -> EndpointReport:
    client = run.client
    compared_on = None
    if client.basis is not None:
        compared_on = client.basis.value + ("+logprobs" if client.with_logprobs else "")
    return EndpointReport(
        name=run.name,
        url=client.url,
        fingerprint=run.fingerprint,
        compared_on=compared_on,
        server=run.info,
        server_facts=run.facts,
        mismatches=list(run.mismatches),
        unchecked=list(run.unchecked),
        served_by=dict(client.served_by.most_common()),
        # A suite cut off by an error has only part of its samples: left out of the tally.
        suites=[SuiteReport.of(r) for r in run.records if r.complete],
        requests=client.requests,
        generated_tokens=client.generated_tokens,
        prompt_tokens=client.prompt_tokens,
        latency_p50_milliseconds=_ms(_percentile(client.latencies, 50)),
        latency_p95_milliseconds=_ms(_percentile(client.latencies, 95)),
        stopped_in=run.current if stopped and not run.finished else None,
    )


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The project's percentile (detinfer/percentile.py); None for no values."""
    return percentile(values, q) if values else None


def _first_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, cancellations skipped."""
    if isinstance(exc, BaseExceptionGroup):
        causes = [_first_cause(e) for e in exc.exceptions]
        real = [c for c in causes if not isinstance(c, asyncio.CancelledError)]
        return (real or causes)[0]
    return exc


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
