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

from collections.abc import Sequence
from dataclasses import dataclass
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
from detinfer.controller.observed import (
    ChildView,
    JobView,
    PodView,
    ReplicaSetView,
    is_controlled_by,
)
from detinfer.controller.writes import Event, Plan

# A measurement that could not measure is tried again after this long (a baseline costs GPUs).
RETRY_SECONDS = 3600
PENDING_UID = ""


@dataclass(frozen=True)
class Outcome:
    """What one finished benchmark Job says: a summary that measured, or why not."""

    summary: OverheadSummary | None
    message: str


def plan_overhead(
    out: Plan,
    context: RevisionContext,
    measurement: OverheadStatus | None,
    record: OverheadJobRecord | None,
    *,
    ready: bool,
    validated: Sequence[PodView],
    pods: Sequence[PodView],
    children: Sequence[ChildView],
    replicasets: Sequence[ReplicaSetView],
    jobs: Sequence[JobView],
    memory: trust.Memory,
    config: OperatorConfig,
    now: datetime,
) -> tuple[OverheadStatus | None, OverheadJobRecord | None]:
    """Add the measurement's writes to `out`; the new status.overhead and status.overheadJob."""
    dis, revision = context.dis, context.revision
    spec = dis.spec.overhead
    created_jobs = memory.created_jobs
    uid = dis.metadata.uid
    ours = [j for j in jobs if is_controlled_by(j.controller, c.KIND, uid)]
    in_flight = next((j for j in ours if record is not None and j.uid == record.uid), None)

    # 1. The Job in flight: cancelled when pointless, else its result read once.
    done_with = None  # the Job whose part is over (read or cancelled): deleted below
    if record is not None and (not spec.enabled or record.revision != revision):
        done_with = record.name
        why = "spec.overhead.enabled is false" if not spec.enabled else "the revision changed"
        out.events.append(
            Event(
                "Normal", R.OVERHEAD_NOT_MEASURED, f"benchmark Job {record.name} cancelled: {why}"
            )
        )
        record = None
    elif record is not None:
        outcome: Outcome | None
        if in_flight is None and record.name in created_jobs:
            outcome = None  # created by this process; the watch has not delivered it yet
        elif in_flight is None:
            outcome = Outcome(None, f"benchmark Job {record.name} is gone")
        else:
            outcome = read_outcome(in_flight, pods)
        if outcome is not None:
            measurement = _measurement(record, outcome, spec, now)
            if outcome.summary is not None:
                out.events.append(
                    Event(
                        "Normal",
                        R.OVERHEAD_MEASURED,
                        f"Job {record.name}: {_headline(measurement)} ({record.deterministic_pod}"
                        f" against baseline {record.baseline_pod})",
                    )
                )
            else:
                out.events.append(
                    Event(
                        "Warning",
                        R.OVERHEAD_NOT_MEASURED,
                        f"Job {record.name}: {outcome.message}"[:1024],
                    )
                )
            done_with = record.name
            record = None

    # 2. A new measurement when due, on a Ready revision only.
    baseline_name = baseline_deployment_name(dis)
    baseline = next(
        (
            ch
            for ch in children
            if (ch.kind, ch.name) == ("Deployment", baseline_name)
            and is_controlled_by(ch.controller, c.KIND, uid)
        ),
        None,
    )
    due = (
        spec.enabled
        and record is None
        and ready
        and bool(validated)
        and is_due(measurement, spec, revision, now)
    )
    if due:
        wanted = build_baseline_deployment(context)
        key = ("Deployment", baseline_name)
        foreign = trust.foreign_children(dis, [key], children, memory)
        if key in foreign:
            # Someone else's Deployment holds the name: no measurement, named once in an Event.
            holder = next((ch for ch in children if (ch.kind, ch.name) == key), None)
            out.ignored[trust.key(*key, holder.uid if holder else "")] = foreign[key]
            due = False
        elif baseline is None or baseline.applied_hash != wanted["metadata"]["annotations"].get(
            c.ANNOTATION_APPLIED_HASH
        ):
            out.apply.append(wanted)
            if baseline is None:
                out.events.append(
                    Event(
                        "Normal",
                        R.OVERHEAD_BASELINE_STARTED,
                        f"baseline Deployment {baseline_name} (revision {revision} without "
                        "determinism) for the overhead measurement",
                    )
                )
    if due and baseline is not None:
        baseline_pods, ignored = trust.engine_pods(
            dis,
            [p for p in pods if p.component == c.COMPONENT_BASELINE],
            baseline,
            replicasets,
        )
        out.ignored |= ignored
        up = sorted(
            (p for p in baseline_pods if p.revision == revision and p.can_be_validated),
            key=lambda p: p.name,
        )
        started = parse_time(baseline.creation_timestamp)
        if not up and started and now - started >= timedelta(seconds=spec.timeout_seconds):
            # No ready baseline pod in time (no free GPUs, an image or model that will not
            # load): could not measure, and the baseline goes instead of holding a node.
            message = (
                f"baseline Deployment {baseline_name} had no ready pod of revision {revision}"
                f" within spec.overhead.timeoutSeconds ({spec.timeout_seconds} s)"
            )
            no_job = OverheadJobRecord(
                name="", uid="", revision=revision, deterministic_pod="", baseline_pod=""
            )
            measurement = _measurement(no_job, Outcome(None, message), spec, now)
            out.events.append(Event("Warning", R.OVERHEAD_NOT_MEASURED, message))
            due = False
        elif up:
            det = sorted(validated, key=lambda p: p.name)[0]
            base = up[0]
            after = measurement.last_run_time if measurement else None
            name = bench_job_name(dis, revision, det.name, base.name, after)
            out.create_bench_job = build_bench_job(
                context,
                Endpoint(pod=det.name, ip=det.ip or ""),
                Endpoint(pod=base.name, ip=base.ip or ""),
                name,
                config,
            )
            record = OverheadJobRecord(
                name=name,
                uid=PENDING_UID,
                revision=revision,
                deterministic_pod=det.name,
                baseline_pod=base.name,
            )
            out.events.append(
                Event(
                    "Normal",
                    R.OVERHEAD_MEASUREMENT_STARTED,
                    f"measuring {det.name} against baseline {base.name} with Job {name}",
                    after="bench-created",
                )
            )

    # 3. The baseline lives only while a measurement needs it; finished Jobs go with it.
    if baseline is not None and record is None and not due:
        out.delete_deployments[baseline.name] = baseline.uid
    for job in ours:
        if record is not None and job.name == record.name:
            continue
        if job.name in created_jobs and job.name != done_with and not job.finished:
            continue  # created by this process, its record not written yet: adopted next pass
        out.delete_jobs.append(job.name)
        out.delete_job_uids[job.name] = job.uid
    return measurement, record


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


def read_outcome(job: JobView, pods: Sequence[PodView]) -> Outcome | None:
    """The outcome of a benchmark Job that has ended; None while it runs."""
    claims, pod = trust.job_pods(job, pods)
    if len(claims) > 1:
        names = ", ".join(sorted(p.name for p in claims))
        return Outcome(
            None, f"{len(claims)} pods claim benchmark Job {job.name} ({names}): none is trusted"
        )
    if pod is not None and pod.terminated is None:
        pod = None
    if pod is None:
        if job.finished:
            return Outcome(
                None,
                f"benchmark Job {job.name} left no result: {job.failure or 'its pod is gone'}",
            )
        return None
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
