"""The overhead measurement (spec.overhead), planned as a pure function like the rest of plan().

Once the current revision is Ready and has no measurement (or the schedule is due): apply the
baseline Deployment (builders/deployment.py: the engine without determinism, in no Service);
once its pod is ready, create the benchmark Job against one validated pod and the baseline;
when the Job has ended, read its OverheadSummary, write status.overhead, and delete the Job and
the baseline. Nothing here touches the conditions: serving never waits for a measurement.

Trust as for validation (controller/trust.py): a baseline pod counts only when a ReplicaSet of
the baseline Deployment this resource controls made it; a result only from the one pod
controlled by the Job whose UID the status recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from detinfer.api import constants as c
from detinfer.api.constants import Reason as R
from detinfer.api.overhead import OverheadError, OverheadSummary
from detinfer.api.spec import OverheadSpec
from detinfer.api.status import OverheadJobRecord, OverheadStatus
from detinfer.api.timestamps import format_time, parse_time
from detinfer.builders import (
    Endpoint,
    RevisionContext,
    baseline_deployment_name,
    bench_job_name,
    build_baseline_deployment,
    build_bench_job,
)
from detinfer.config import OperatorConfig
from detinfer.controller import trust
from detinfer.controller.jobs import result_of
from detinfer.controller.observed import ChildView, JobView, Observed, PodView, is_controlled_by
from detinfer.controller.writes import (
    PENDING_UID,
    Apply,
    CreateJob,
    DeleteDeployment,
    DeleteJob,
    Event,
    Write,
)

# A measurement that could not measure is tried again after this long (a baseline costs GPUs).
RETRY_SECONDS = 3600
NOUN = "benchmark Job"


@dataclass(frozen=True)
class Outcome:
    """What one finished benchmark Job says: a summary that measured, or why not."""

    summary: OverheadSummary | None
    message: str


@dataclass(frozen=True)
class Bench:
    """The measurement's part of a pass: its writes and Events, and its status fields."""

    measurement: OverheadStatus | None
    record: OverheadJobRecord | None
    writes: tuple[Write, ...] = ()
    events: tuple[Event, ...] = ()  # announced with the status
    ignored: Mapping[str, str] = field(default_factory=dict)
    # Still due after this pass: waiting for the baseline (step 2 of plan_overhead).
    due: bool = False
    # The Job whose part is over this pass (read or cancelled): deleted with the rest.
    done_with: str | None = None


def plan_overhead(
    context: RevisionContext,
    measurement: OverheadStatus | None,
    record: OverheadJobRecord | None,
    *,
    ready: bool,
    validated: Sequence[PodView],
    observed: Observed,
    memory: trust.Memory,
    config: OperatorConfig,
    now: datetime,
) -> Bench:
    """The measurement's writes, and the new status.overhead and status.overheadJob."""
    dis, revision, spec = context.dis, context.revision, context.dis.spec.overhead
    uid = dis.metadata.uid
    ours = [
        j
        for j in observed.jobs
        if j.component == c.COMPONENT_BENCH and is_controlled_by(j.controller, c.KIND, uid)
    ]
    # 1. The Job in flight: cancelled when pointless, else its result read once.
    bench = _follow(measurement, record, ours, observed.pods, memory, spec, revision, now)
    done_with = bench.done_with
    # 2. A new measurement when due, on a Ready revision only.
    baseline = next(
        (
            ch
            for ch in observed.children
            if (ch.kind, ch.name) == ("Deployment", baseline_deployment_name(dis))
            and is_controlled_by(ch.controller, c.KIND, uid)
        ),
        None,
    )
    if (
        spec.enabled
        and bench.record is None
        and ready
        and bool(validated)
        and is_due(bench.measurement, spec, revision, now)
    ):
        bench = _measure(context, bench, baseline, validated, observed, memory, config, now)
    # 3. The baseline lives only while a measurement needs it; finished Jobs go with it.
    writes = list(bench.writes)
    if baseline is not None and bench.record is None and not bench.due:
        writes.append(DeleteDeployment(baseline.name, baseline.uid))
    for job in ours:
        if bench.record is not None and job.name == bench.record.name:
            continue
        if job.name in memory.created_jobs and job.name != done_with and not job.finished:
            continue  # created by this process, its record not written yet: adopted next pass
        writes.append(DeleteJob(job.name, job.uid))
    if len(writes) == len(bench.writes):
        return bench
    return Bench(bench.measurement, bench.record, tuple(writes), bench.events, bench.ignored)


def _follow(
    measurement: OverheadStatus | None,
    record: OverheadJobRecord | None,
    ours: Sequence[JobView],
    pods: Sequence[PodView],
    memory: trust.Memory,
    spec: OverheadSpec,
    revision: str,
    now: datetime,
) -> Bench:
    """The benchmark Job in flight: cancelled when pointless, else its result read once
    (jobs.result_of)."""
    if record is None:
        return Bench(measurement, None)
    if not spec.enabled or record.revision != revision:
        why = "spec.overhead.enabled is false" if not spec.enabled else "the revision changed"
        cancelled = Event(
            "Normal", R.OVERHEAD_NOT_MEASURED, f"benchmark Job {record.name} cancelled: {why}"
        )
        return Bench(measurement, None, events=(cancelled,), done_with=record.name)
    job = next((j for j in ours if j.uid == record.uid), None)
    outcome = result_of(
        record,
        job,
        pods,
        memory.created_jobs,
        NOUN,
        read=_read_summary,
        no_result=lambda why: Outcome(None, why),
    )
    if outcome is None:
        return Bench(measurement, record)
    measurement = _measurement(record, outcome, spec, now)
    if outcome.summary is not None:
        event = Event(
            "Normal",
            R.OVERHEAD_MEASURED,
            f"Job {record.name}: {_headline(measurement)} ({record.deterministic_pod}"
            f" against baseline {record.baseline_pod})",
        )
    else:
        message = f"Job {record.name}: {outcome.message}"
        event = Event("Warning", R.OVERHEAD_NOT_MEASURED, message[:1024])
    return Bench(measurement, None, events=(event,), done_with=record.name)


def _measure(
    context: RevisionContext,
    bench: Bench,
    baseline: ChildView | None,
    validated: Sequence[PodView],
    observed: Observed,
    memory: trust.Memory,
    config: OperatorConfig,
    now: datetime,
) -> Bench:
    """A measurement that is due: the baseline Deployment applied, then, once its pod is ready,
    the benchmark Job created (or, with no ready pod in time, could not measure)."""
    dis, revision = context.dis, context.revision
    name = baseline_deployment_name(dis)
    wanted = build_baseline_deployment(context)
    key = ("Deployment", name)
    foreign = trust.foreign_children(dis, [key], observed.children, memory)
    if key in foreign:
        # Someone else's Deployment holds the name: no measurement, named once in an Event.
        holder = next((ch for ch in observed.children if (ch.kind, ch.name) == key), None)
        ignored = {trust.key(*key, holder.uid if holder else ""): foreign[key]}
        return replace(bench, ignored=ignored)
    writes: list[Write] = []
    events = list(bench.events)
    if baseline is None or baseline.applied_hash != wanted["metadata"]["annotations"].get(
        c.ANNOTATION_APPLIED_HASH
    ):
        writes.append(
            Apply(
                wanted,
                baseline is not None,
                baseline.applied_hash if baseline else None,
                baseline.created if baseline else False,
            )
        )
        if baseline is None:
            events.append(
                Event(
                    "Normal",
                    R.OVERHEAD_BASELINE_STARTED,
                    f"baseline Deployment {name} (revision {revision} without "
                    "determinism) for the overhead measurement",
                )
            )
    bench = replace(bench, writes=(*bench.writes, *writes), events=tuple(events), due=True)
    if baseline is None:
        return bench
    return _start_bench(context, bench, baseline, validated, observed, config, now)


def _start_bench(
    context: RevisionContext,
    bench: Bench,
    baseline: ChildView,
    validated: Sequence[PodView],
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
) -> Bench:
    """The benchmark Job against one validated pod and the baseline's first ready pod."""
    dis, revision, spec = context.dis, context.revision, context.dis.spec.overhead
    baseline_pods, ignored = trust.engine_pods(
        dis,
        [p for p in observed.pods if p.component == c.COMPONENT_BASELINE],
        baseline,
        observed.replicasets,
    )
    bench = replace(bench, ignored={**bench.ignored, **ignored})
    up = sorted(
        (p for p in baseline_pods if p.revision == revision and p.can_be_validated),
        key=lambda p: p.name,
    )
    started = parse_time(baseline.creation_timestamp)
    if not up and started and now - started >= timedelta(seconds=spec.timeout_seconds):
        # No ready baseline pod in time (no free GPUs, an image or model that will not load):
        # could not measure, and the baseline goes instead of holding a node.
        message = (
            f"baseline Deployment {baseline.name} had no ready pod of revision {revision}"
            f" within spec.overhead.timeoutSeconds ({spec.timeout_seconds} s)"
        )
        no_job = OverheadJobRecord(
            name="", uid="", revision=revision, deterministic_pod="", baseline_pod=""
        )
        measurement = _measurement(no_job, Outcome(None, message), spec, now)
        event = Event("Warning", R.OVERHEAD_NOT_MEASURED, message)
        return replace(bench, measurement=measurement, events=(*bench.events, event), due=False)
    if not up:
        return bench
    det, base = sorted(validated, key=lambda p: p.name)[0], up[0]
    after = bench.measurement.last_run_time if bench.measurement else None
    name = bench_job_name(dis, revision, det.name, base.name, after)
    body = build_bench_job(
        context,
        Endpoint(pod=det.name, ip=det.ip or ""),
        Endpoint(pod=base.name, ip=base.ip or ""),
        name,
        config,
    )
    started_event = Event(
        "Normal",
        R.OVERHEAD_MEASUREMENT_STARTED,
        f"measuring {det.name} against baseline {base.name} with Job {name}",
    )
    record = OverheadJobRecord(
        name=name,
        uid=PENDING_UID,  # filled in from the create response (writes.with_job_uids)
        revision=revision,
        deterministic_pod=det.name,
        baseline_pod=base.name,
    )
    create = CreateJob("benchmark", body, (started_event,))
    return replace(bench, record=record, writes=(*bench.writes, create))


def is_due(
    measurement: OverheadStatus | None, spec: OverheadSpec, revision: str, now: datetime
) -> bool:
    """Whether this revision needs a (new) measurement."""
    if measurement is None or measurement.revision != revision:
        return True
    if measurement.workload != spec.workload:
        return True
    last = parse_time(measurement.last_run_time)
    if last is None:
        return True
    if not measurement.measured:
        return now - last >= timedelta(seconds=RETRY_SECONDS)
    every = spec.remeasure_every_seconds
    return bool(every) and now - last >= timedelta(seconds=every)


def _read_summary(job: JobView, pod: PodView) -> Outcome:
    """The outcome in the termination message of the Job's one terminated pod."""
    term = pod.terminated
    assert term is not None
    try:
        summary = OverheadSummary.parse(term.message)
    except OverheadError as exc:
        why = f"exit code {term.exit_code}" + (f" ({term.reason})" if term.reason else "")
        return Outcome(None, f"benchmark {pod.name} {why}: {exc}")
    if summary.exit_code != term.exit_code:
        return Outcome(
            None,
            f"benchmark {pod.name} exited {term.exit_code} but its summary says measured="
            f"{str(summary.measured).lower()} (exit {summary.exit_code})",
        )
    if not summary.measured:
        return Outcome(None, f"could not measure: {summary.reason or 'no reason given'}")
    if not summary.levels or summary.headline_percent is None:
        return Outcome(None, "could not measure: the summary says measured but holds no level")
    return Outcome(summary, "")


def _measurement(
    record: OverheadJobRecord, outcome: Outcome, spec: OverheadSpec, now: datetime
) -> OverheadStatus:
    summary = outcome.summary
    base = OverheadStatus(
        revision=record.revision,
        measured=False,
        message=outcome.message[:1024],
        last_run_time=format_time(now),
        job_name=record.name,
        deterministic_pod=record.deterministic_pod,
        baseline_pod=record.baseline_pod,
        workload=spec.workload,
    )
    if summary is None:
        return base
    return base.model_copy(
        update={
            "measured": True,
            "message": "",
            "workload": summary.workload,
            "headline_percent": round(summary.headline_percent or 0.0, 1),
            "headline_concurrency": summary.headline_concurrency,
            "levels": list(summary.levels),
            "duration_seconds": round(summary.duration_seconds),
        }
    )


def _headline(m: OverheadStatus) -> str:
    return f"throughput overhead {m.headline_percent:+.1f}% at concurrency {m.headline_concurrency}"
