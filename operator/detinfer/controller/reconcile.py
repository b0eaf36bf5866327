"""Reconciliation as a pure function: observed state in, a Plan of writes out.

`plan()` reads one DeterministicInferenceService (parsed once, at its revision) with the pods,
Jobs and children the operator has indexed for it, and decides everything: which children to
apply, whether to start a validation Job, what each pod's readiness-gate condition must be, the
new status and the Events.
It never talks to the cluster and takes the time as an argument, so every branch is unit-tested
and running it twice on the same state plans the same writes (or none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from detinfer.api import constants as c
from detinfer.api.constants import ConditionType as T
from detinfer.api.constants import Reason as R
from detinfer.api.resource import DeterministicInferenceService, SpecError
from detinfer.api.spec import FingerprintPolicy
from detinfer.api.status import (
    Condition,
    ConditionStatus,
    DeterministicInferenceServiceStatus,
    JobRecord,
    ReplicaCounts,
    SuiteOutcome,
    ValidationStatus,
    Verdict,
)
from detinfer.api.summary import SummaryError, ValidationSummary
from detinfer.api.timestamps import format_time, parse_time
from detinfer.builders import (
    Endpoint,
    RevisionContext,
    build_children,
    build_validation_job,
    validation_job_name,
)
from detinfer.config import OperatorConfig
from detinfer.controller import conditions as cond
from detinfer.controller import trust
from detinfer.controller.jobs import in_flight, result_of
from detinfer.controller.observed import (
    JobView,
    Observed,
    PodView,
    ResourceView,
    is_controlled_by,
)
from detinfer.controller.overhead import plan_overhead
from detinfer.controller.search import plan_search
from detinfer.controller.trust import Memory
from detinfer.controller.writes import (
    PENDING_UID,
    Apply,
    CreateJob,
    DeleteJob,
    DeleteNetworkPolicy,
    Event,
    Plan,
    SetPodCondition,
    Write,
    WriteStatus,
)
from detinfer.engines import kinds

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN

_NOT_READY = Condition(
    type=T.READY, status=FALSE, reason=R.REPLICAS_NOT_VALIDATED, last_transition_time=""
)

__all__ = ["Event", "Plan", "Result", "plan"]


@dataclass(frozen=True)
class Result:
    """What one finished validation Job says."""

    verdict: Verdict
    message: str
    summary: ValidationSummary | None


@dataclass(frozen=True)
class Pass:
    """What every planner of one pass reads: the resource at its revision, its old status, what
    the indexes show of it, and the operator's memory of its own writes."""

    context: RevisionContext
    old: DeterministicInferenceServiceStatus
    observed: Observed
    config: OperatorConfig
    now: datetime
    memory: Memory

    @property
    def dis(self) -> DeterministicInferenceService:
        return self.context.dis

    @property
    def revision(self) -> str:
        return self.context.revision

    @property
    def jobs(self) -> list[JobView]:
        """Every Job with our labels, oldest first."""
        return sorted(self.observed.jobs, key=lambda j: (j.created, j.name))


@dataclass(frozen=True)
class Validation:
    """The validation side of one pass: the Job in flight, the last run, the fingerprint."""

    record: JobRecord | None  # the Job in flight after this pass
    running: bool  # a Job started by an earlier pass is still in flight
    run: ValidationStatus | None  # the last run, this pass's result included
    fingerprint: str | None
    fingerprint_revision: str | None
    writes: tuple[Write, ...] = ()
    events: tuple[Event, ...] = ()  # announced with the status
    consumed: Verdict | None = None
    ignored: Mapping[str, str] = field(default_factory=dict)

    def gates(self) -> dict[str, dict[str, Any]]:
        return {w.pod: w.condition for w in self.writes if isinstance(w, SetPodCondition)}


def plan(
    resource: ResourceView,
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    memory: Memory | None = None,
) -> Plan:
    old = resource.status
    if isinstance(resource.parsed, SpecError):
        return _plan_invalid(resource.parsed, old, resource.generation, now)
    # engine.attentionBackend Auto: render the backend on trial (or chosen) instead.
    search, rendered, search_events = plan_search(resource.parsed.dis, old, now)
    context = resource.parsed if rendered is resource.parsed.dis else RevisionContext.of(rendered)
    p = Pass(context, old, observed, config, now, memory or Memory())
    engine_pods, ignored = _engine_pods(p)
    v = _follow_validation(p, engine_pods)
    engine_pods = _with_conditions(engine_pods, v.gates())
    current = [pod for pod in engine_pods if pod.revision == p.revision and not pod.deleting]
    ready = [pod for pod in current if pod.can_be_validated]
    # The Auto search that chose a backend it tried before: a later trial's run replaced the
    # record, while the chosen revision's pods kept the gates of their own.
    returned = search is not None and search.trying is None
    start = () if v.running else _start_validation(p, ready, v, returned)
    serving_revision = _serving_revision(engine_pods, p.revision, old.serving_revision)
    children, foreign = _plan_children(p, serving_revision)
    conflict = "; ".join(foreign[k] for k in sorted(foreign))
    conditions = _conditions(
        p,
        resource.generation,
        run=v.run if v.run and v.run.revision == p.revision else None,
        fingerprint=v.fingerprint,
        current=current,
        serving=[
            pod for pod in engine_pods if pod.is_validated and pod.revision == serving_revision
        ],
        validating=v.running or bool(start),
        conflict=conflict,
    )
    validated_current = [pod for pod in current if pod.is_validated]
    bench = plan_overhead(
        context,
        old.overhead,
        old.overhead_job,
        ready=(cond.find(conditions, T.READY) or _NOT_READY).status == TRUE,
        validated=[pod for pod in validated_current if pod.can_be_validated],
        observed=observed,
        memory=p.memory,
        config=config,
        now=now,
    )
    ignored = {**ignored, **v.ignored, **bench.ignored}
    status = DeterministicInferenceServiceStatus(
        observed_generation=resource.generation,
        conditions=conditions,
        revision=p.revision,
        serving_revision=serving_revision,
        replicas=ReplicaCounts(
            desired=p.dis.spec.replicas, running=len(ready), validated=len(validated_current)
        ),
        **_validation_fields(v, start[0].record if start else v.record),
        overhead=bench.measurement,
        overhead_job=bench.record,
        attention_search=search,
    )
    events = (
        *search_events,
        *v.events,
        *_conflict_events(conflict, old.conditions),
        *bench.events,
        *_untrusted(ignored, p.memory.reported),
    )
    changed = status.to_wire() != old.to_wire()
    writes = [*v.writes, *(s.write for s in start), *children, *bench.writes]
    return Plan.of(
        [*writes, WriteStatus(status if changed else None, events)],
        consumed=v.consumed,
        ignored=ignored,
    )


def _engine_pods(p: Pass) -> tuple[list[PodView], dict[str, str]]:
    """The engine pods our Deployment made, and the ignored ones (key -> why)."""
    return trust.engine_pods(
        p.dis,
        [pod for pod in p.observed.pods if pod.component == c.COMPONENT_ENGINE],
        trust.own_deployment(p.dis, p.observed.children),
        p.observed.replicasets,
    )


def _validation_fields(v: Validation, record: JobRecord | None) -> dict[str, Any]:
    """The status fields of the validation side: the last run, the Job in flight, the
    fingerprint."""
    return {
        "validation": v.run,
        "validation_job": record,
        "fingerprint": v.fingerprint,
        "fingerprint_revision": v.fingerprint_revision,
        "short_fingerprint": v.fingerprint.removeprefix("sha256:")[:12] if v.fingerprint else None,
    }


def _untrusted(ignored: Mapping[str, str], reported: frozenset[str]) -> tuple[Event, ...]:
    """A Warning for each ignored object not named in one before."""
    return tuple(
        Event("Warning", R.UNTRUSTED_OBJECT, ignored[k][:1024])
        for k in sorted(set(ignored) - reported)
    )


def _follow_validation(p: Pass, engine_pods: Sequence[PodView]) -> Validation:
    """The validation Job in flight: cancelled when the revision changed, else its result read
    once (jobs.result_of)."""
    dis, old, memory = p.dis, p.old, p.memory
    jobs = [j for j in p.jobs if j.component != c.COMPONENT_BENCH]
    last = old.validation
    recorded = (old.fingerprint, old.fingerprint_revision)
    # The Job in flight is the one whose UID the status recorded when the operator created it.
    record = old.validation_job or trust.adopt_created(
        dis, jobs, memory, last.job_name if last else None
    )
    job = in_flight(record, jobs, dis.metadata.uid)
    ignored = trust.ignored_jobs(dis, p.jobs, memory)
    ignored |= trust.ignored_validator_pods(dis, p.observed.pods, jobs, job)
    if record is None:
        return Validation(None, False, last, *recorded, ignored=ignored)
    if record.revision != p.revision:
        cancel = Event("Normal", R.VALIDATION_JOB_CANCELLED, f"{record.name}: the revision changed")
        writes = (
            ()
            if job is not None and job.finished
            else (DeleteJob(record.name, record.uid, (cancel,)),)
        )
        return Validation(None, False, last, *recorded, writes, ignored=ignored)
    result = result_of(
        record,
        job,
        p.observed.pods,
        memory.created_jobs,
        "validation Job",
        read=_read_summary,
        no_result=lambda why: Result(Verdict.COULD_NOT_TEST, why, None),
    )
    if result is None:
        return Validation(record, True, last, *recorded, ignored=ignored)
    ran = job or JobView(record.name, record.revision, (), None, "", True, None)
    return replace(_consume(p, ran, result, engine_pods, recorded), ignored=ignored)


@dataclass(frozen=True)
class Start:
    """A validation Job to create, and its record in the status."""

    write: CreateJob
    record: JobRecord


def _start_validation(
    p: Pass, ready: Sequence[PodView], v: Validation, returned: bool
) -> tuple[Start, ...]:
    """A validation Job for the ready pods that are waiting for one, if any."""
    dis, revision, validation = p.dis, p.revision, v.run
    due = _due_pods(dis, ready, validation, revision, p.config, p.now, returned=returned)
    if not due:
        return ()
    name = _free_job_name(
        dis,
        revision,
        [pod.name for pod in due],
        validation.last_run_time if validation else None,
        # A Job of ours under this run's name is this very run, created by a process that could
        # not record it (restarted): the create adopts it if its template is this run's
        # (Cluster.create_job), so the name is not skipped for a second Job.
        {
            j.name
            for j in p.jobs
            if j.component != c.COMPONENT_BENCH
            and (
                not is_controlled_by(j.controller, c.KIND, dis.metadata.uid)
                or (validation is not None and j.name == validation.job_name)
            )
        }
        | set(p.memory.taken_job_names),
    )
    endpoints = [Endpoint(pod=pod.name, ip=pod.ip or "") for pod in due]
    expected = _expected_fingerprint(dis, v.fingerprint, v.fingerprint_revision, revision)
    started = Event(
        "Normal",
        R.VALIDATION_STARTED,
        f"validating {', '.join(pod.name for pod in due)} with Job {name}",
    )
    body = build_validation_job(p.context, endpoints, expected, name, p.config)
    # The UID comes back only in the create response: the executor fills it in (with_job_uids).
    record = JobRecord(name=name, uid=PENDING_UID, revision=revision)
    return (Start(CreateJob("validation", body, (started,)), record),)


def _plan_children(
    p: Pass, serving_revision: str
) -> tuple[list[Write], dict[tuple[str, str], str]]:
    """The children to apply (with the client Service on the revision that serves now), the
    NetworkPolicies no longer wanted, and the children whose name someone else holds (never
    applied): (kind, name) -> why."""
    dis, uid, children = p.dis, p.dis.metadata.uid, p.observed.children
    wanted = build_children(p.context, serving_revision, p.config)
    foreign = trust.foreign_children(
        dis, [(ch["kind"], ch["metadata"]["name"]) for ch in wanted], children, p.memory
    )
    ours = [ch for ch in children if is_controlled_by(ch.controller, c.KIND, uid)]
    hashes = {(ch.kind, ch.name): ch.applied_hash for ch in ours}
    created = {(ch.kind, ch.name) for ch in ours if ch.created}
    wanted_keys = {(ch["kind"], ch["metadata"]["name"]) for ch in wanted}
    writes: list[Write] = [
        DeleteNetworkPolicy(ch.name, ch.uid)
        for ch in ours
        if ch.kind == "NetworkPolicy" and (ch.kind, ch.name) not in wanted_keys
    ]
    for child in wanted:
        key = (child["kind"], child["metadata"]["name"])
        if (
            key not in foreign
            and hashes.get(key) != child["metadata"]["annotations"][c.ANNOTATION_APPLIED_HASH]
        ):
            writes.append(Apply(child, key in hashes, hashes.get(key), key in created))
    return writes, foreign


def _conflict_events(conflict: str, before: Sequence[Condition]) -> tuple[Event, ...]:
    """A Warning when children someone else holds block the resource, once per conflict."""
    ready_before = cond.find(before, T.READY)
    if not conflict or (
        ready_before is not None
        and (ready_before.reason, ready_before.message) == (R.CHILD_CONFLICT, conflict)
    ):
        return ()
    return (Event("Warning", R.CHILD_CONFLICT, conflict[:1024]),)


def _free_job_name(
    dis: DeterministicInferenceService,
    revision: str,
    pods: Sequence[str],
    after: str | None,
    taken: set[str],
) -> str:
    """The first name for this run that no Job holds (someone may have taken the predictable
    one)."""
    attempt = 0
    while (name := validation_job_name(dis, revision, pods, after, attempt)) in taken:
        attempt += 1
    return name


def _read_summary(job: JobView, pod: PodView) -> Result:
    """The verdict in the termination message of the Job's one terminated pod."""
    term = pod.terminated
    assert term is not None
    try:
        summary = ValidationSummary.parse(term.message)
    except SummaryError as exc:
        why = f"exit code {term.exit_code}" + (f" ({term.reason})" if term.reason else "")
        return Result(Verdict.COULD_NOT_TEST, f"validator {pod.name} {why}: {exc}", None)
    if summary.exit_code != term.exit_code:
        return Result(
            Verdict.COULD_NOT_TEST,
            f"validator {pod.name} exited {term.exit_code} but its summary says "
            f"{summary.verdict.value} (exit {summary.exit_code})",
            summary,
        )
    verdict, message = summary.verdict, summary.reason
    lacking = _without_evidence(summary) if verdict == Verdict.DETERMINISTIC else None
    if lacking is not None:
        # Defence in depth: the validator must not say Deterministic on nothing either.
        return Result(
            Verdict.COULD_NOT_TEST,
            f"validator {pod.name} said Deterministic without evidence: {lacking}",
            summary,
        )
    if (
        verdict == Verdict.DETERMINISTIC
        and job.expected_fingerprint
        and summary.fingerprint != job.expected_fingerprint
    ):
        # Defence in depth: the validator should have caught this itself.
        verdict = Verdict.FINGERPRINT_MISMATCH
        message = (
            f"fingerprint {summary.fingerprint} is not the expected {job.expected_fingerprint}"
        )
    return Result(verdict, message or verdict.value, summary)


def _without_evidence(summary: ValidationSummary) -> str | None:
    """What a Deterministic summary lacks to be taken as a pass; None when nothing."""
    if summary.fingerprint is None:
        return "no fingerprint"
    if summary.tokens_compared == 0 and not summary.characters_compared:
        return "0 tokens compared"
    for suite in summary.suites:
        if suite.outcome not in (SuiteOutcome.PASSED, SuiteOutcome.SKIPPED):
            return f"suite {suite.name.value} is {suite.outcome.value if suite.outcome else 'without an outcome'}"
        if suite.outcome == SuiteOutcome.PASSED and not (
            suite.tokens_compared or suite.characters_compared
        ):
            return f"suite {suite.name.value} passed on 0 tokens compared"
    return None


def _consume(
    p: Pass,
    job: JobView,
    result: Result,
    engine_pods: Sequence[PodView],
    recorded: tuple[str | None, str | None],
) -> Validation:
    """Turn a Job's result into pod conditions, the validation status, and Events."""
    summary, revision, now = result.summary, p.revision, p.now
    existing = {pod.name: pod for pod in engine_pods if not pod.deleting}
    failed = set(summary.failed_endpoints) if summary else set()
    writes: list[Write] = []
    for name in job.pods:
        if name not in existing:
            continue
        if result.verdict == Verdict.DETERMINISTIC or (
            result.verdict.failed and failed and name not in failed
        ):
            gate = (TRUE, R.DETERMINISTIC, f"passed validation Job {job.name}")
        elif result.verdict.failed:
            gate = (FALSE, result.verdict.value, result.message[:1024])
        else:
            gate = (FALSE, R.COULD_NOT_VALIDATE, result.message[:1024])
        condition = cond.pod_condition(c.READINESS_GATE, *gate, now)
        if not cond.same_pod_condition(existing[name].validated, condition):
            writes.append(SetPodCondition(name, condition))

    events = []
    fingerprint, fingerprint_revision = recorded
    if result.verdict == Verdict.DETERMINISTIC and summary and summary.fingerprint:
        if (fingerprint, fingerprint_revision) != (summary.fingerprint, revision):
            events.append(
                Event(
                    "Normal",
                    R.FINGERPRINT_RECORDED,
                    f"revision {revision}: fingerprint {summary.fingerprint}",
                )
            )
        fingerprint, fingerprint_revision = summary.fingerprint, revision

    passed = result.verdict == Verdict.DETERMINISTIC
    previous = p.old.validation
    run = ValidationStatus(
        revision=revision,
        job_name=job.name,
        verdict=result.verdict,
        message=result.message[:1024],
        last_run_time=format_time(now),
        last_success_time=format_time(now)
        if passed
        else (previous.last_success_time if previous else None),
        pods=list(job.pods),
        duration_seconds=round(summary.duration_seconds) if summary else None,
        tokens_used=summary.tokens_used if summary else None,
        unique_outputs=summary.max_unique_outputs if summary else None,
        suites=list(summary.suites) if summary else [],
        server=summary.server if summary else None,
        **_load_figures(summary),
    )
    kind = "Normal" if passed else "Warning"
    reason = result.verdict.condition_reason
    events.append(Event(kind, reason, f"Job {job.name}: {result.message}"[:1024]))
    return Validation(
        None,
        False,
        run,
        fingerprint,
        fingerprint_revision,
        tuple(writes),
        tuple(events),
        consumed=result.verdict,
    )


def _load_figures(summary: ValidationSummary | None) -> dict[str, int | None]:
    """Latency and throughput the validator saw under its own load, rounded."""

    def rounded(value: float | None) -> int | None:
        return None if value is None else round(value)

    if summary is None:
        return {}
    return {
        "latency_p50_milliseconds": rounded(summary.latency_p50_milliseconds),
        "latency_p95_milliseconds": rounded(summary.latency_p95_milliseconds),
        "tokens_per_second": rounded(summary.tokens_per_second),
    }


def _with_conditions(
    pods: Sequence[PodView], gates: Mapping[str, Mapping[str, Any]]
) -> list[PodView]:
    """The pods as they will be once the planned conditions are written."""
    return [replace(p, validated=dict(gates[p.name])) if p.name in gates else p for p in pods]


def _due_pods(
    dis: DeterministicInferenceService,
    ready: Sequence[PodView],
    validation: ValidationStatus | None,
    revision: str,
    config: OperatorConfig,
    now: datetime,
    *,
    returned: bool = False,
) -> list[PodView]:
    """Ready pods of this revision that need a validation run now. `returned`: the revision is
    one the resource served before (the Auto search's choice), so a pod's passed gate may come
    from a run the status no longer records: with no run on this revision recorded, such pods
    are validated again, so that the status rests on a run of what serves."""
    interval = dis.spec.validation.revalidate_every_seconds
    if interval and validation is not None and validation.revision == revision:
        last = parse_time(validation.last_run_time)
        if last is not None and now - last >= timedelta(seconds=interval):
            return list(ready)  # periodic revalidation: everyone, to catch drift
    # The pods of the last run on this revision had their gates written with it; the watch
    # can show the status that records the run before it shows those gates.
    just_run = (
        set(validation.pods)
        if validation is not None and validation.revision == revision
        else set()
    )
    last_run = parse_time(validation.last_run_time) if validation is not None else None
    unrecorded = returned and (validation is None or validation.revision != revision)
    due = []
    for pod in ready:
        gate = pod.validated
        if gate is None:
            if pod.name not in just_run:
                due.append(pod)
        elif unrecorded:
            due.append(pod)
        elif gate.get("status") == "True":
            # Its engine restarted after the verdict (the model_info liveness probe restarts a
            # pod whose weights were swapped): the process that passed is gone.
            verdict = parse_time(gate.get("lastTransitionTime"))
            if pod.name in just_run and last_run is not None:
                verdict = max(verdict, last_run) if verdict is not None else last_run
            started = parse_time(pod.running_since)
            if started is not None and verdict is not None and started > verdict:
                due.append(pod)
        elif gate.get("status") != "True" and gate.get("reason") == R.COULD_NOT_VALIDATE:
            since = parse_time(gate.get("lastTransitionTime"))
            if since is None or now - since >= timedelta(seconds=config.retry_after_seconds):
                due.append(pod)
    if due and len(ready) < dis.spec.replicas:
        # Other replicas are still starting: wait for them a while, so one run compares them all.
        first = min((parse_time(p.ready_since) or now for p in due), default=now)
        if now - first < timedelta(seconds=config.gather_seconds):
            return []
    return due


def _expected_fingerprint(
    dis: DeterministicInferenceService,
    fingerprint: str | None,
    fingerprint_revision: str | None,
    revision: str,
) -> str | None:
    if dis.spec.validation.fingerprint_policy == FingerprintPolicy.ENFORCE:
        return dis.spec.validation.expected_fingerprint
    return fingerprint if fingerprint_revision == revision else None


def _serving_revision(engine_pods: Sequence[PodView], revision: str, previous: str | None) -> str:
    """The current revision once any of its pods passed; until then, whichever revision serves."""
    serving = {p.revision for p in engine_pods if p.is_validated and not p.deleting}
    if revision in serving or not serving:
        return revision
    if previous in serving:
        return previous  # type: ignore[return-value]
    return sorted(r for r in serving if r)[0]


def _conditions(
    p: Pass,
    generation: int | None,
    *,
    run: ValidationStatus | None,
    fingerprint: str | None,
    current: Sequence[PodView],
    serving: Sequence[PodView],
    validating: bool,
    conflict: str = "",
) -> list[Condition]:
    """All five conditions, from what was observed and decided: the one place they are set.

    `run` is the last run on this revision; `conflict` names the children someone else holds:
    nothing can progress until they are gone, so it is the reason on Progressing and Ready.
    """
    conds = list(p.old.conditions)
    dis, revision = p.dis, p.revision

    def put(type_: str, value: ConditionStatus, reason: str, message: str) -> None:
        cond.set_condition(conds, type_, value, reason, message, generation, p.now)

    put(T.ADMIN_ENDPOINTS_CLOSED, *_admin_endpoints(dis))
    if dis.spec.replicas == 0:
        for type_ in (T.PROGRESSING, T.AVAILABLE, T.READY):
            put(type_, FALSE, R.SCALED_TO_ZERO, "spec.replicas is 0")
        put(T.VALIDATED, UNKNOWN, R.SCALED_TO_ZERO, "no pods to validate")
        put(T.DEGRADED, FALSE, R.AS_EXPECTED, "")
        if conflict:
            put(T.PROGRESSING, FALSE, R.CHILD_CONFLICT, conflict)
            put(T.READY, FALSE, R.CHILD_CONFLICT, conflict)
        return conds
    put(T.VALIDATED, *_validated(run, revision, fingerprint, validating))
    if run is not None and run.verdict.failed:
        put(T.DEGRADED, TRUE, run.verdict.value, run.message)
    else:
        put(T.DEGRADED, FALSE, R.AS_EXPECTED, "")
    if serving:
        put(
            T.AVAILABLE,
            TRUE,
            R.MINIMUM_REPLICAS_AVAILABLE,
            f"{len(serving)} validated pod(s) serve revision {serving[0].revision}",
        )
    else:
        put(T.AVAILABLE, FALSE, R.NO_VALIDATED_REPLICAS, "no pod has passed validation yet")
    progress = _progress(dis, revision, run, current, validating)
    if conflict:
        progress = (FALSE, R.CHILD_CONFLICT, conflict)
    put(T.PROGRESSING, *progress)
    put(T.READY, *_ready(dis, run, current, progress, conflict))
    return conds


def _validated(
    run: ValidationStatus | None, revision: str, fingerprint: str | None, validating: bool
) -> tuple[ConditionStatus, str, str]:
    """Validated: the verdict of the last run on this revision."""
    if run is None:
        reason = R.VALIDATING if validating else R.VALIDATION_PENDING
        return UNKNOWN, reason, f"revision {revision} has not been validated yet"
    if run.verdict == Verdict.DETERMINISTIC:
        return (
            TRUE,
            R.DETERMINISTIC,
            f"every suite gave one output on {', '.join(run.pods)}; fingerprint {fingerprint}",
        )
    if run.verdict.failed:
        return FALSE, run.verdict.value, run.message
    return UNKNOWN, R.COULD_NOT_VALIDATE, run.message


def _progress(
    dis: DeterministicInferenceService,
    revision: str,
    run: ValidationStatus | None,
    current: Sequence[PodView],
    validating: bool,
) -> tuple[ConditionStatus, str, str]:
    """Progressing, and the reason Ready is not yet True."""
    desired = dis.spec.replicas
    validated = [pod for pod in current if pod.is_validated]
    unschedulable = next((pod for pod in current if pod.unschedulable), None)
    running = [pod for pod in current if pod.can_be_validated]
    if len(validated) >= desired:
        return (
            FALSE,
            R.ROLLOUT_COMPLETE,
            f"{len(validated)} pod(s) of revision {revision} validated",
        )
    if run is not None and run.verdict.failed and not validating:
        return FALSE, R.VALIDATION_FAILED, run.message
    if validating:
        return TRUE, R.VALIDATING, f"validating revision {revision}"
    if unschedulable is not None:
        return (
            TRUE,
            R.PODS_UNSCHEDULABLE,
            f"pod {unschedulable.name}: {unschedulable.unschedulable}",
        )
    if run is not None and run.verdict == Verdict.COULD_NOT_TEST:
        return TRUE, R.COULD_NOT_VALIDATE, f"{run.message} (will retry)"
    return (
        TRUE,
        R.WAITING_FOR_PODS,
        f"{len(running)} of {desired} pod(s) of revision {revision} running",
    )


def _ready(
    dis: DeterministicInferenceService,
    run: ValidationStatus | None,
    current: Sequence[PodView],
    progress: tuple[ConditionStatus, str, str],
    conflict: str,
) -> tuple[ConditionStatus, str, str]:
    """Ready: a passing run on this revision and every desired replica validated."""
    desired = dis.spec.replicas
    validated = [pod for pod in current if pod.is_validated]
    if conflict:
        return FALSE, R.CHILD_CONFLICT, conflict
    if run is not None and run.verdict == Verdict.DETERMINISTIC and len(validated) >= desired:
        return (
            TRUE,
            R.REPLICAS_VALIDATED,
            f"{len(validated)} of {desired} pod(s) validated deterministic",
        )
    failed = run is not None and run.verdict.failed
    blocker = progress if progress[0] == TRUE or failed else (FALSE, R.REPLICAS_NOT_VALIDATED, "")
    return FALSE, blocker[1], blocker[2] or f"{len(validated)} of {desired} pod(s) validated"


def _plan_invalid(
    exc: SpecError,
    old: DeterministicInferenceServiceStatus,
    generation: int | None,
    now: datetime,
) -> Plan:
    """An invalid spec: say so on Ready, touch no child (nothing is lost), no retry."""
    conds = list(old.conditions)
    message = str(exc)[:4000]
    before = cond.find(conds, T.READY)
    cond.set_condition(conds, T.READY, FALSE, R.INVALID_SPEC, message, generation, now)
    cond.set_condition(conds, T.PROGRESSING, FALSE, R.INVALID_SPEC, message, generation, now)
    for type_ in (T.AVAILABLE, T.VALIDATED, T.DEGRADED):
        if cond.find(conds, type_) is None:
            value = FALSE if type_ == T.DEGRADED else UNKNOWN
            cond.set_condition(conds, type_, value, R.INVALID_SPEC, "", generation, now)
    status = old.model_copy(update={"conditions": conds, "observed_generation": generation})
    events: tuple[Event, ...] = ()
    if before is None or before.reason != R.INVALID_SPEC or before.message != message:
        events = (Event("Warning", R.INVALID_SPEC, message[:1024]),)
    changed = status.to_wire() != old.to_wire()
    return Plan.of([WriteStatus(status if changed else None, events)], invalid=exc)


def _admin_endpoints(dis: DeterministicInferenceService) -> tuple[ConditionStatus, str, str]:
    """AdminEndpointsClosed: who can change a validated pod's weights, adapters or logging (the
    engine kind's package knows its endpoints)."""
    closed, reason, message = kinds.of(dis.spec).admin_endpoints(dis.spec.engine)
    return (TRUE if closed else FALSE), reason, message
