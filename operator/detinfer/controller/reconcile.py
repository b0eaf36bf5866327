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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from detinfer.api import constants as c
from detinfer.api.constants import ConditionType as T
from detinfer.api.constants import Reason as R
from detinfer.api.keys import AdminAccess, admin_access
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
from detinfer.controller.writes import Event, Plan
from detinfer.sglang_flags import features

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
# The UID of a Job the plan creates, until the create response gives the real one.
PENDING_UID = ""

_NOT_READY = Condition(
    type=T.READY, status=FALSE, reason=R.REPLICAS_NOT_VALIDATED, last_transition_time=""
)

__all__ = ["Event", "Plan", "Result", "plan", "read_result"]


@dataclass(frozen=True)
class Result:
    """What one finished validation Job says."""

    verdict: Verdict
    message: str
    summary: ValidationSummary | None


def plan(
    resource: ResourceView,
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    memory: Memory | None = None,
) -> Plan:
    out = Plan()
    memory = memory or Memory()
    generation = resource.generation
    old = resource.status
    if isinstance(resource.parsed, SpecError):
        return _plan_invalid(out, resource.parsed, old, generation, now)

    context = resource.parsed
    # engine.attentionBackend Auto: render the backend on trial (or chosen) instead.
    search, rendered = plan_search(out, context.dis, old, now)
    if rendered is not context.dis:
        context = RevisionContext.of(rendered)
    dis, revision = context.dis, context.revision
    pods = list(observed.pods)
    children = list(observed.children)
    engine_pods, ignored = trust.engine_pods(
        dis,
        [p for p in pods if p.component == c.COMPONENT_ENGINE],
        trust.own_deployment(dis, children),
        observed.replicasets,
    )
    every_job = sorted(observed.jobs, key=lambda j: (j.created, j.name))
    jobs = [j for j in every_job if j.component != c.COMPONENT_BENCH]
    bench_jobs = [j for j in every_job if j.component == c.COMPONENT_BENCH]
    validation = old.validation
    fingerprint, fingerprint_revision = old.fingerprint, old.fingerprint_revision

    # The Job in flight is the one whose UID the status recorded when the operator created it.
    record = old.validation_job or trust.adopt_created(
        dis, jobs, memory, validation.job_name if validation else None
    )
    in_flight = next(
        (
            j
            for j in jobs
            if record is not None
            and j.uid == record.uid
            and is_controlled_by(j.controller, c.KIND, dis.metadata.uid)
        ),
        None,
    )
    ignored |= trust.ignored_jobs(dis, every_job, memory)
    ignored |= trust.ignored_validator_pods(dis, pods, jobs, in_flight)

    # 1. Read the result of the Job in flight, once; a spec change makes it pointless.
    job_running = False
    if record is not None and record.revision != revision:
        if not (in_flight is not None and in_flight.finished):
            out.delete_jobs.append(record.name)
            out.delete_job_uids[record.name] = record.uid
            out.events.append(
                Event(
                    "Normal",
                    R.VALIDATION_JOB_CANCELLED,
                    f"{record.name}: the revision changed",
                    after="job-deleted",
                )
            )
        record = None
    elif record is not None:
        if in_flight is None and record.name in memory.created_jobs:
            result = None  # created by this process; the watch has not delivered it yet
        elif in_flight is None:
            result = Result(Verdict.COULD_NOT_TEST, f"validation Job {record.name} is gone", None)
        else:
            result = read_result(in_flight, pods)
        if result is None:
            job_running = True
        else:
            validation, fingerprint, fingerprint_revision = _consume(
                out,
                in_flight or JobView(record.name, record.revision, (), None, "", True, None),
                result,
                engine_pods,
                validation,
                (fingerprint, fingerprint_revision),
                revision,
                now,
            )
            record = None

    engine_pods = [_with_condition(p, out.pod_conditions.get(p.name)) for p in engine_pods]
    current = [p for p in engine_pods if p.revision == revision and not p.deleting]
    ready = [p for p in current if p.can_be_validated]

    # 2. Start a validation Job when pods are waiting for one.
    starting: list[str] = []
    if not job_running:
        # The Auto search that chose a backend it tried before: a later trial's run replaced
        # the record, while the chosen revision's pods kept the gates of their own.
        returned = search is not None and search.trying is None
        due = _due_pods(dis, ready, validation, revision, config, now, returned=returned)
        expected = _expected_fingerprint(dis, fingerprint, fingerprint_revision, revision)
        if due:
            name = _free_job_name(
                dis,
                revision,
                [p.name for p in due],
                validation.last_run_time if validation else None,
                # A Job of ours under this run's name is this very run, created by a process
                # that could not record it (restarted): the create adopts it if its template is
                # this run's (Cluster.create_job), so the name is not skipped for a second Job.
                {
                    j.name
                    for j in jobs
                    if not is_controlled_by(j.controller, c.KIND, dis.metadata.uid)
                    or (validation is not None and j.name == validation.job_name)
                }
                | set(memory.taken_job_names),
            )
            endpoints = [Endpoint(pod=p.name, ip=p.ip or "") for p in due]
            out.create_job = build_validation_job(context, endpoints, expected, name, config)
            # The UID comes back only in the create response: the executor fills it in.
            record = JobRecord(name=name, uid=PENDING_UID, revision=revision)
            out.events.append(
                Event(
                    "Normal",
                    R.VALIDATION_STARTED,
                    f"validating {', '.join(p.name for p in due)} with Job {name}",
                    after="job-created",
                )
            )
            starting = [p.name for p in due]

    # 3. Children, with the client Service on the revision that serves now. A child whose name
    # someone else holds is never applied.
    serving_revision = _serving_revision(engine_pods, revision, old.serving_revision)
    wanted = build_children(context, serving_revision, config)
    foreign = trust.foreign_children(
        dis, [(ch["kind"], ch["metadata"]["name"]) for ch in wanted], children, memory
    )
    applied_hashes = {
        (ch.kind, ch.name): ch.applied_hash
        for ch in children
        if is_controlled_by(ch.controller, c.KIND, dis.metadata.uid)
    }
    out.observed_hashes = applied_hashes
    out.created_children = {
        (ch.kind, ch.name) for ch in children if ch.created and (ch.kind, ch.name) in applied_hashes
    }
    wanted_keys = {(ch["kind"], ch["metadata"]["name"]) for ch in wanted}
    out.delete_policies = {
        ch.name: ch.uid
        for ch in children
        if ch.kind == "NetworkPolicy"
        and (ch.kind, ch.name) not in wanted_keys
        and is_controlled_by(ch.controller, c.KIND, dis.metadata.uid)
    }
    for child in wanted:
        child_key = (child["kind"], child["metadata"]["name"])
        if child_key in foreign:
            continue
        if (
            applied_hashes.get(child_key)
            != child["metadata"]["annotations"][c.ANNOTATION_APPLIED_HASH]
        ):
            out.apply.append(child)

    # 4. Status.
    validated_current = [p for p in current if p.is_validated]
    conditions = list(old.conditions)
    ready_before = cond.find(conditions, T.READY)
    conflict = "; ".join(foreign[k] for k in sorted(foreign))
    _set_conditions(
        conditions,
        dis,
        revision=revision,
        run=validation if validation and validation.revision == revision else None,
        fingerprint=fingerprint,
        current=current,
        serving=[p for p in engine_pods if p.is_validated and p.revision == serving_revision],
        validating=job_running or bool(starting),
        conflict=conflict,
        generation=generation,
        now=now,
    )
    if conflict and (
        ready_before is None
        or (ready_before.reason, ready_before.message) != (R.CHILD_CONFLICT, conflict)
    ):
        out.events.append(Event("Warning", R.CHILD_CONFLICT, conflict[:1024]))

    # 5. The overhead measurement: after the conditions, which never wait for it.
    overhead, overhead_job = plan_overhead(
        out,
        context,
        old.overhead,
        old.overhead_job,
        ready=(cond.find(conditions, T.READY) or _NOT_READY).status == TRUE,
        validated=[p for p in validated_current if p.can_be_validated],
        pods=pods,
        children=children,
        replicasets=observed.replicasets,
        jobs=bench_jobs,
        memory=memory,
        config=config,
        now=now,
    )
    out.ignored = ignored | out.ignored
    for ignored_key in sorted(set(out.ignored) - memory.reported):
        out.events.append(Event("Warning", R.UNTRUSTED_OBJECT, out.ignored[ignored_key][:1024]))
    status = DeterministicInferenceServiceStatus(
        observed_generation=generation,
        conditions=conditions,
        revision=revision,
        serving_revision=serving_revision,
        fingerprint=fingerprint,
        fingerprint_revision=fingerprint_revision,
        short_fingerprint=fingerprint.removeprefix("sha256:")[:12] if fingerprint else None,
        replicas=ReplicaCounts(
            desired=dis.spec.replicas, running=len(ready), validated=len(validated_current)
        ),
        validation=validation,
        validation_job=record,
        overhead=overhead,
        overhead_job=overhead_job,
        attention_search=search,
    )
    if status.to_wire() != old.to_wire():
        out.status = status
    return out


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


def read_result(job: JobView, pods: Sequence[PodView]) -> Result | None:
    """The verdict of a Job whose validator has finished; None while it is still running.

    Only the Job's one pod (controlled by its UID, running its template's containers) counts;
    two pods claiming it make the run "could not validate", never a verdict.
    """
    claims, pod = trust.job_pods(job, pods)
    if len(claims) > 1:
        names = ", ".join(sorted(p.name for p in claims))
        return Result(
            Verdict.COULD_NOT_TEST,
            f"{len(claims)} pods claim validation Job {job.name} ({names}): none is trusted",
            None,
        )
    if pod is not None and pod.terminated is None:
        pod = None
    if pod is None:
        if job.finished:
            reason = job.failure or "its pod is gone"
            return Result(
                Verdict.COULD_NOT_TEST, f"validation Job {job.name} left no result: {reason}", None
            )
        return None
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
    out: Plan,
    job: JobView,
    result: Result,
    engine_pods: Sequence[PodView],
    previous: ValidationStatus | None,
    recorded: tuple[str | None, str | None],
    revision: str,
    now: datetime,
) -> tuple[ValidationStatus, str | None, str | None]:
    """Turn a Job's result into pod conditions, the validation status, and Events."""
    summary = result.summary
    existing = {p.name: p for p in engine_pods if not p.deleting}
    failed = set(summary.failed_endpoints) if summary else set()
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
            out.pod_conditions[name] = condition

    fingerprint, fingerprint_revision = recorded
    if result.verdict == Verdict.DETERMINISTIC and summary and summary.fingerprint:
        if (fingerprint, fingerprint_revision) != (summary.fingerprint, revision):
            out.events.append(
                Event(
                    "Normal",
                    R.FINGERPRINT_RECORDED,
                    f"revision {revision}: fingerprint {summary.fingerprint}",
                )
            )
        fingerprint, fingerprint_revision = summary.fingerprint, revision

    passed = result.verdict == Verdict.DETERMINISTIC
    validation = ValidationStatus(
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
    out.events.append(Event(kind, reason, f"Job {job.name}: {result.message}"[:1024]))
    out.consumed = result.verdict
    return validation, fingerprint, fingerprint_revision


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


def _with_condition(pod: PodView, condition: Mapping[str, Any] | None) -> PodView:
    """The pod as it will be once the planned condition is written."""
    return pod if condition is None else replace(pod, validated=dict(condition))


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


def _set_conditions(
    conds: list[Condition],
    dis: DeterministicInferenceService,
    *,
    revision: str,
    run: ValidationStatus | None,
    fingerprint: str | None,
    current: Sequence[PodView],
    serving: Sequence[PodView],
    validating: bool,
    generation: int | None,
    now: datetime,
    conflict: str = "",
) -> None:
    """Set all five conditions in `conds` (in place) from what was observed and decided.

    `conflict` names the children someone else holds: nothing can progress until they are
    gone, so it is the reason on Progressing and Ready.
    """
    desired = dis.spec.replicas
    validated = [p for p in current if p.is_validated]

    def put(type_: str, value: ConditionStatus, reason: str, message: str) -> None:
        cond.set_condition(conds, type_, value, reason, message, generation, now)

    put(T.ADMIN_ENDPOINTS_CLOSED, *_admin_endpoints(dis))
    if desired == 0:
        for type_ in (T.PROGRESSING, T.AVAILABLE, T.READY):
            put(type_, FALSE, R.SCALED_TO_ZERO, "spec.replicas is 0")
        put(T.VALIDATED, UNKNOWN, R.SCALED_TO_ZERO, "no pods to validate")
        put(T.DEGRADED, FALSE, R.AS_EXPECTED, "")
        if conflict:
            put(T.PROGRESSING, FALSE, R.CHILD_CONFLICT, conflict)
            put(T.READY, FALSE, R.CHILD_CONFLICT, conflict)
        return

    # Validated: the verdict of the last run on this revision.
    if run is None:
        put(
            T.VALIDATED,
            UNKNOWN,
            R.VALIDATING if validating else R.VALIDATION_PENDING,
            f"revision {revision} has not been validated yet",
        )
    elif run.verdict == Verdict.DETERMINISTIC:
        put(
            T.VALIDATED,
            TRUE,
            R.DETERMINISTIC,
            f"every suite gave one output on {', '.join(run.pods)}; fingerprint {fingerprint}",
        )
    elif run.verdict.failed:
        put(T.VALIDATED, FALSE, run.verdict.value, run.message)
    else:
        put(T.VALIDATED, UNKNOWN, R.COULD_NOT_VALIDATE, run.message)

    failed = run is not None and run.verdict.failed
    if failed:
        assert run is not None
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

    # Progressing, and the reason Ready is not yet True.
    unschedulable = next((p for p in current if p.unschedulable), None)
    running = [p for p in current if p.can_be_validated]
    if len(validated) >= desired:
        progress = (
            FALSE,
            R.ROLLOUT_COMPLETE,
            f"{len(validated)} pod(s) of revision {revision} validated",
        )
    elif failed and not validating:
        assert run is not None
        progress = (FALSE, R.VALIDATION_FAILED, run.message)
    elif validating:
        progress = (TRUE, R.VALIDATING, f"validating revision {revision}")
    elif unschedulable is not None:
        progress = (
            TRUE,
            R.PODS_UNSCHEDULABLE,
            f"pod {unschedulable.name}: {unschedulable.unschedulable}",
        )
    elif run is not None and run.verdict == Verdict.COULD_NOT_TEST:
        progress = (TRUE, R.COULD_NOT_VALIDATE, f"{run.message} (will retry)")
    else:
        progress = (
            TRUE,
            R.WAITING_FOR_PODS,
            f"{len(running)} of {desired} pod(s) of revision {revision} running",
        )
    if conflict:
        progress = (FALSE, R.CHILD_CONFLICT, conflict)
    put(T.PROGRESSING, *progress)

    if conflict:
        put(T.READY, FALSE, R.CHILD_CONFLICT, conflict)
    elif run is not None and run.verdict == Verdict.DETERMINISTIC and len(validated) >= desired:
        put(
            T.READY,
            TRUE,
            R.REPLICAS_VALIDATED,
            f"{len(validated)} of {desired} pod(s) validated deterministic",
        )
    else:
        blocker = (
            progress if progress[0] == TRUE or failed else (FALSE, R.REPLICAS_NOT_VALIDATED, "")
        )
        message = blocker[2] or f"{len(validated)} of {desired} pod(s) validated"
        put(T.READY, FALSE, blocker[1], message)


def _plan_invalid(
    out: Plan,
    exc: SpecError,
    old: DeterministicInferenceServiceStatus,
    generation: int | None,
    now: datetime,
) -> Plan:
    """An invalid spec: say so on Ready, touch no child (nothing is lost), no retry."""
    out.invalid = exc
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
    if before is None or before.reason != R.INVALID_SPEC or before.message != message:
        out.events.append(Event("Warning", R.INVALID_SPEC, message[:1024]))
    if status.to_wire() != old.to_wire():
        out.status = status
    return out


def _admin_endpoints(dis: DeterministicInferenceService) -> tuple[ConditionStatus, str, str]:
    """AdminEndpointsClosed: who can change a validated pod's weights, adapters or logging."""
    engine = dis.spec.engine
    access = admin_access(engine)
    release = f"SGLang {engine.version}"
    if access == AdminAccess.ADMIN_KEY:
        secret = engine.admin_api_key_secret
        source = (
            f"from Secret {secret.name} key {secret.key}"
            if secret
            else "made in each pod when it starts and written nowhere the API serves"
        )
        return (
            TRUE,
            access.value,
            f"the admin endpoints (weight updates, LoRA adapters, internal state, logging, "
            f"cache) take only the admin key, {source}; but SGLang answers it on /server_info "
            "to every caller it serves, so who reaches the pods decides "
            "(docs/architecture.md#threat-model)",
        )
    if access == AdminAccess.CLIENT_KEY:
        secret = engine.api_key_secret
        assert secret is not None
        return (
            FALSE,
            access.value,
            f"{release} has no --admin-api-key: every client holding the key in Secret "
            f"{secret.name} can change the pods' weights and adapters; SGLang "
            f"{features.ADMIN_API_KEY_FIRST} and later close them with an admin key",
        )
    return (
        FALSE,
        access.value,
        f"{release} has no --admin-api-key and spec.engine.apiKeySecret is unset: anyone who "
        "reaches a pod can change its weights and adapters; set apiKeySecret (its key then "
        f"opens them) or run SGLang {features.ADMIN_API_KEY_FIRST} or later",
    )
