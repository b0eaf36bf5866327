"""One reconciliation of one resource, whatever triggered it.

`sync` parses the body once (the API model at its revision, or the spec error), gathers what the
indexes show of its pods, Jobs and children, asks the pure `plan()` what to write, writes only
that, and hands the typed status to both the status write and the metrics. A trigger with
nothing to do costs no API call. On a write conflict it re-reads the resource and plans again;
when a create finds someone else's object in the way, it remembers that and plans again.

Status is written through the API rather than kopf's `patch.status`, because pod and Job events
must update the status of the resource that owns them, not their own.

`sync_key` is what the workers (controller/workqueue.py) run for a key the queue hands them: one
worker at a time per key, so two passes of one resource never overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from detinfer import metrics
from detinfer.api.status import DeterministicInferenceServiceStatus, JobRecord
from detinfer.builders.common import RevisionContext, applied_hash
from detinfer.config import OperatorConfig
from detinfer.controller.cluster import Conflict, InTheWay
from detinfer.controller.observed import JobView, Observed, ResourceView
from detinfer.controller.reconcile import plan
from detinfer.controller.state import State
from detinfer.controller.watches import Indexes
from detinfer.controller.writes import (
    Apply,
    CreateJob,
    DeleteDeployment,
    DeleteJob,
    DeleteNetworkPolicy,
    Event,
    Plan,
    SetPodCondition,
    WriteStatus,
    with_job_uids,
)

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 3
# Each child and the Job can be found in the way once per pass.
IN_THE_WAY_ATTEMPTS = 4
# A pass that failed for a reason no later event is sure to fix is tried again after this long.
RETRY_AFTER_ERROR_SECONDS = 10.0
# A pass that finds an index not listed yet (the operator is starting) is tried again after this.
UNSYNCED_RETRY_SECONDS = 1.0


class RetryLater(Exception):
    """The pass could not finish; the queue brings the key back after `delay` seconds."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


def sync_key(state: State, key: tuple[str, str]) -> float | None:
    """One pass for the resource `key` as the index shows it now: the delay after which it must
    run again, or None. A resource the index no longer holds is forgotten."""
    indexes = state.indexes
    bodies = list(indexes.resources.get(key, [])) if indexes else []
    if not bodies:
        # Deleted (no finalizer: the children go with their owner references): only our
        # memory remains.
        state.forget(key)
        return None
    assert indexes is not None
    try:
        for body in bodies:  # one: names are unique in a namespace
            done = sync(state, key, body, indexes, deployment_first=True)
            if done.follow_up:
                return 0.0
    except RetryLater as exc:
        log.info("%s/%s: %s (again in %ss)", *key, exc, exc.delay)
        return exc.delay
    except Exception:
        log.exception("%s/%s: reconciliation failed", *key)
        return RETRY_AFTER_ERROR_SECONDS
    return None


def sync(
    state: State,
    key: tuple[str, str],
    body: Mapping[str, Any],
    indexes: Indexes,
    deployment_first: bool = False,
) -> Plan:
    """Reconcile one resource from the indexes; the plan carried out. The caller makes sure that
    no other pass of the same resource runs meanwhile (the work queue does).

    `deployment_first`, for a resource no pass has written a status for: when the plan applies the Deployment and writes more,
    only the Deployment is written, and the plan says `follow_up`: the caller queues the
    resource again for the rest (its Services, its status). The Deployment starts the slowest
    chain (ReplicaSet, pods, scheduling, the engine's start); the Services and the status can
    wait for one more turn, and the next new resource's Deployment then waits for one write of
    each resource before it instead of four."""
    started = time.perf_counter()
    result = "error"
    try:
        resource = ResourceView.from_body(_freshest(body, state.of(key).written))
        conflicts = 0
        deleted: set[str] = set()  # Jobs deleted by an earlier attempt of this pass
        unsynced = indexes.unsynced()
        if unsynced:
            # An object absent from an index that has not listed yet may exist all the same.
            raise RetryLater(
                f"{', '.join(sorted(unsynced))} not listed yet", UNSYNCED_RETRY_SECONDS
            )
        for _ in range(CONFLICT_ATTEMPTS + IN_THE_WAY_ATTEMPTS):
            recorded = resource.status.validation_job
            observed = with_recorded_job(state, key, gather(state, key, indexes), recorded)
            observed = with_recorded_job(state, key, observed, resource.status.overhead_job)
            the_plan = plan(
                resource,
                observed,
                state.config,
                datetime.now(UTC),
                state.memory(key, recorded.uid if recorded else None, observed.jobs),
            )
            if deployment_first and not resource.status_keys:
                the_plan = _deployment_only(the_plan)
            try:
                _execute(state, key, resource, the_plan, deleted)
                break
            except InTheWay as exc:
                log.warning("%s/%s: %s", *key, exc)
                state.found_in_the_way(key, exc)
            except Conflict:
                conflicts += 1
                if conflicts == CONFLICT_ATTEMPTS:
                    raise
                # Someone else (often kopf's own bookkeeping) wrote the object since the
                # index saw it: plan again from a fresh read.
                metrics.reconcile_total.labels("conflict").inc()
                resource = ResourceView.from_body(state.cluster.get_dis(*key))
        else:
            raise RetryLater("objects in the way of every attempt", RETRY_AFTER_ERROR_SECONDS)
        result = "invalid" if the_plan.invalid else "success"
        return the_plan
    except Conflict as exc:
        result = "conflict"
        raise RetryLater(str(exc), 1) from None
    except ApiException as exc:
        if exc.status == 404:
            result = "gone"
            return Plan()  # deleted meanwhile: garbage collection takes the children
        raise RetryLater(
            f"Kubernetes API: {exc.status} {exc.reason}", RETRY_AFTER_ERROR_SECONDS
        ) from None
    finally:
        metrics.reconcile_total.labels(result).inc()
        metrics.reconcile_duration.labels(result).observe(time.perf_counter() - started)


# A made-up resource that warm_up plans: the reference engine, valid, with the overhead
# measurement, so the CEL rules, the models and the builders of every child are used once.
_WARM_UP = {
    "apiVersion": "detinfer.io/v1alpha1",
    "kind": "DeterministicInferenceService",
    "metadata": {"namespace": "warm-up", "name": "warm-up", "uid": "warm-up", "generation": 1},
    "spec": {
        "model": {"path": "tiny", "allowUnpinnedRevision": True},
        "engine": {"kind": "Reference", "image": "detinfer-engine@sha256:" + "0" * 64},
        "replicas": 1,
        "resources": {"gpusPerReplica": 0},
        "overhead": {"enabled": True},
    },
}


def warm_up(config: OperatorConfig) -> Plan:
    """Plan a made-up resource, writing nothing, before the first real one.

    A process's first pass pays for what is built once and kept (the CEL programs, pydantic's
    validators, the builders' and the client's first use): about 140 ms of CPU here, against
    well under a millisecond for the next. Without this, the workers took the first new
    resources side by side and each paid it, holding the GIL while the resources' watch events
    waited on kopf's event loop (docs/benchmarks.md)."""
    resource = ResourceView.from_body(_WARM_UP)
    the_plan = plan(resource, Observed(), config, datetime.now(UTC))
    if the_plan.invalid or the_plan.status is None:
        raise AssertionError(f"the warm-up resource did not plan: {the_plan.invalid}")
    the_plan.status.to_wire()
    return the_plan


def _deployment_only(p: Plan) -> Plan:
    """The plan's Deployment apply alone (follow_up), if the plan has it and more; else `p`."""
    first = [w for w in p.writes if isinstance(w, Apply) and w.kind == "Deployment"]
    if not first or p.count() == len(first):
        return p
    return Plan(tuple(first), follow_up=True)


def gather(state: State, key: tuple[str, str], indexes: Indexes) -> Observed:
    """What the indexes show of one resource, with the children this process applied since."""
    return Observed(
        pods=indexes.pods.get(key),
        jobs=indexes.jobs.get(key),
        children=state.children(
            key,
            [
                *indexes.deployments.get(key),
                *indexes.services.get(key),
                *indexes.network_policies.get(key),
            ],
        ),
        replicasets=indexes.replicasets.get(key),
    )


def with_recorded_job(
    state: State, key: tuple[str, str], observed: Observed, recorded: JobRecord | None
) -> Observed:
    """`observed` with the Job the status records, read by name when the Jobs index does not
    show it: only a Job that the API server says is gone (or whose name another UID holds now)
    may be called gone. The index can lag behind the status: an operator that restarted, or a
    status written by a pass whose Job the watch has not delivered yet (this process's own
    Jobs plan() knows from its memory, and are not read again).

    A Job so read counts as running (its pod may lag in the pods index just as the Job did):
    the watch queues the resource again when it delivers either."""
    if (
        recorded is None
        or not recorded.uid
        or any(job.uid == recorded.uid for job in observed.jobs)
        or recorded.name in state.of(key).created_jobs
    ):
        return observed
    body = state.cluster.read_job(key[0], recorded.name)
    if body is None or (body.get("metadata") or {}).get("uid") != recorded.uid:
        return observed
    log.info("%s/%s: Job %s is not in the index yet; read by name", *key, recorded.name)
    running = dataclasses.replace(JobView.from_body(body), finished=False, failure=None)
    return dataclasses.replace(observed, jobs=[*observed.jobs, running])


def _execute(
    state: State,
    key: tuple[str, str],
    resource: ResourceView,
    p: Plan,
    deleted: set[str],
) -> None:
    """Carry out the plan's writes in order, each one's Events posted once it succeeded."""
    executor = _Executor(state, key, resource, deleted)
    for write in p.writes:
        executor.dispatch[type(write)](write)
    state.of(key).reported = frozenset(p.ignored)
    status = executor.status
    if status is not None or resource.status_keys:
        spec = resource.parsed.dis.spec if isinstance(resource.parsed, RevisionContext) else None
        metrics.observe(
            *key,
            status or resource.status,
            p.consumed,
            spec.validation.revalidate_every_seconds if spec else None,
            resource.engine_kind,
        )


class _Executor:
    """One write of each type; `deleted`: the Jobs an earlier attempt of this pass deleted."""

    def __init__(
        self, state: State, key: tuple[str, str], resource: ResourceView, deleted: set[str]
    ):
        self.state, self.key, self.resource, self.deleted = state, key, resource, deleted
        self.cluster = state.cluster
        self.memory = state.of(key)
        self.namespace = key[0]
        self.uids: dict[str, str] = {}  # Job name -> UID, of the Jobs created by this pass
        self.status: DeterministicInferenceServiceStatus | None = None  # as written
        self.dispatch: dict[type, Callable[[Any], None]] = {
            Apply: self.apply,
            DeleteJob: self.delete_job,
            CreateJob: self.create_job,
            DeleteDeployment: self.delete_deployment,
            DeleteNetworkPolicy: self.delete_network_policy,
            SetPodCondition: self.set_pod_condition,
            WriteStatus: self.write_status,
        }

    def post(self, events: tuple[Event, ...], action: str) -> None:
        for event in events:
            self.state.post_event(
                self.resource.reference, event.type, event.reason, event.message, action
            )

    def apply(self, w: Apply) -> None:
        self.cluster.apply(w.obj, self.resource.uid, seen=w.seen, created=w.created)
        metrics.api_writes_total.labels(f"apply-{w.kind}").inc()
        self.memory.applied[(w.kind, w.name)] = (
            applied_hash(w.obj) or "",
            w.observed_hash,
            self.resource.uid,
        )
        self.post(w.events, "Apply")

    def delete_job(self, w: DeleteJob) -> None:
        if w.name in self.deleted:
            return  # and its Events were posted then
        self.cluster.delete_job(self.namespace, w.name, w.uid)
        metrics.api_writes_total.labels("delete-job").inc()
        self.deleted.add(w.name)
        self.post(w.events, "DeleteJob")

    def create_job(self, w: CreateJob) -> None:
        created = self.memory.created_jobs
        uid, new = self.cluster.create_job(w.body, {n: u for n, (u, _) in created.items()})
        created.setdefault(w.name, (uid, time.monotonic()))
        self.uids[w.name] = uid
        if new:  # a Job that existed already was announced when it was made
            metrics.api_writes_total.labels("create-job").inc()
            self.post(w.events, "CreateJob")

    def delete_deployment(self, w: DeleteDeployment) -> None:
        self.cluster.delete_deployment(self.namespace, w.name, w.uid)
        metrics.api_writes_total.labels("delete-deployment").inc()
        # What this process applied no longer stands in for the index (State.children).
        self.memory.applied.pop(("Deployment", w.name), None)
        self.post(w.events, "DeleteDeployment")

    def delete_network_policy(self, w: DeleteNetworkPolicy) -> None:
        self.cluster.delete_network_policy(self.namespace, w.name, w.uid)
        metrics.api_writes_total.labels("delete-networkpolicy").inc()
        self.memory.applied.pop(("NetworkPolicy", w.name), None)
        self.post(w.events, "DeleteNetworkPolicy")

    def set_pod_condition(self, w: SetPodCondition) -> None:
        self.cluster.set_pod_condition(self.namespace, w.pod, w.condition)
        metrics.api_writes_total.labels("pod-condition").inc()
        self.post(w.events, "UpdatePodStatus")

    def write_status(self, w: WriteStatus) -> None:
        if w.status is not None:
            status = with_job_uids(w.status, self.uids)
            r = self.resource
            body = self.cluster.patch_status(
                *self.key, status.to_wire(), r.stored_status, r.resource_version
            )
            self.memory.written = lean(body)
            metrics.api_writes_total.labels("status").inc()
            self.status = status
        # Transitions are announced only once the status that records them is written: a pass
        # that conflicts posts nothing, and its retry posts them once.
        self.post(w.events, "UpdateStatus")


def lean(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without its managedFields (kept in memory for every resource, read by nothing)."""
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return body


def _freshest(indexed: Mapping[str, Any], written: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The newer of the indexed body and the one our last write returned.

    resourceVersions are opaque by contract but are etcd revisions (integers) in practice; if
    they ever are not, the index wins.
    """
    if not written:
        return indexed
    try:
        newer = int(written["metadata"]["resourceVersion"]) > int(
            indexed["metadata"]["resourceVersion"]
        )
    except (KeyError, TypeError, ValueError):
        return indexed
    if not newer or written["metadata"].get("generation") != indexed["metadata"].get("generation"):
        return indexed
    return written
