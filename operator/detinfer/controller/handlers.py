"""kopf handlers: thin. Every trigger leads to the same level-based `sync` of one resource.

Triggers: a watch event of the resource (created, updated, found at start-up); one of its
pods, Jobs, Services, ReplicaSets or its Deployment changes; a periodic pass (revalidation,
retries). `sync` reads everything from kopf's in-memory indexes, asks the pure `plan()` what to
write, and writes only that, so a trigger with nothing to do costs no API call.

Status is written by `sync` through the API rather than kopf's `patch.status`, because pod and
Job events must update the status of the resource that owns them, not their own.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from detinfer import metrics
from detinfer.api import constants as c
from detinfer.builders.common import applied_hash
from detinfer.config import OperatorConfig
from detinfer.controller.cluster import Cluster, Conflict, InTheWay
from detinfer.controller.observed import (
    ChildView,
    Controller,
    JobView,
    PodView,
    ReplicaSetView,
    owner_key,
)
from detinfer.controller.reconcile import Plan, plan
from detinfer.controller.trust import Memory, in_the_way

log = logging.getLogger(__name__)

DIS = (c.GROUP, c.VERSION, c.PLURAL)
OURS = {c.LABEL_PART_OF: c.PART_OF}
TIMER_INTERVAL_SECONDS = 30
# A Job this process created is remembered at most this long if the index never shows it.
CREATED_JOB_MEMORY_SECONDS = 600
INDEXES = (
    "resources_by_key",
    "pods_by_owner",
    "jobs_by_owner",
    "deployments_by_owner",
    "services_by_owner",
    "replicasets_by_owner",
)


class State:
    """What the handlers share, kept in kopf's memo."""

    def __init__(
        self,
        cluster: Cluster,
        config: OperatorConfig,
        post_event: Callable[..., None] = kopf.event,
    ):
        self.cluster = cluster
        self.config = config
        self.post_event = post_event
        self.locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # The body our last status write returned, per resource: fresher than the index until
        # the watch delivers it, so a quick second sync does not act on stale status.
        self.written: dict[tuple[str, str], dict[str, Any]] = {}
        # kopf's indexes, as the handlers receive them, for the periodic pass.
        self.indexes: Mapping[str, Any] | None = None
        # Children applied but maybe not yet in the index: (namespace, kind, name) ->
        # (hash applied, hash the index showed then, UID of the resource that owns it). Saves
        # re-applying while the watch lags.
        self.applied: dict[tuple[str, str, str], tuple[str, str | None, str]] = {}
        # What plan() gets as trust.Memory, per resource; see there. Times are time.monotonic().
        self.created_jobs: defaultdict[tuple[str, str], dict[str, tuple[str, float]]] = defaultdict(
            dict
        )
        self.foreign_children: defaultdict[
            tuple[str, str], dict[tuple[str, str], tuple[str, float]]
        ] = defaultdict(dict)
        self.taken_job_names: defaultdict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        self.reported: dict[tuple[str, str], frozenset[str]] = {}

    def children(self, namespace: str, indexed: list[ChildView]) -> list[ChildView]:
        """The indexed children, with what this process applied since standing in for them
        until the index has caught up."""
        out = []
        seen = set()
        for child in indexed:
            key = (namespace, child.kind, child.name)
            seen.add(key)
            applied, before, _ = self.applied.get(key, (None, None, ""))
            if applied is None or child.applied_hash == applied:
                self.applied.pop(key, None)
                out.append(child)
            elif child.applied_hash == before:
                out.append(replace(child, applied_hash=applied))
            else:  # changed by someone else since: trust the index
                self.applied.pop(key, None)
                out.append(child)
        for (ns, kind, name), (applied, before, owner) in list(self.applied.items()):
            if ns == namespace and (ns, kind, name) not in seen and before is None:
                # Created or applied by this process as the owner's child: it is ours.
                out.append(ChildView(kind, name, applied, Controller(c.KIND, "", owner)))
        return out

    def memory(
        self, key: tuple[str, str], body: Mapping[str, Any], indexed_jobs: list[JobView]
    ) -> Memory:
        """What plan() must know beyond the indexes, after forgetting what is settled."""
        now = time.monotonic()
        recorded = ((body.get("status") or {}).get("validationJob") or {}).get("uid")
        indexed = {j.uid for j in indexed_jobs}
        created = self.created_jobs[key]
        for name, (uid, since) in list(created.items()):
            if (uid == recorded and uid in indexed) or now - since > CREATED_JOB_MEMORY_SECONDS:
                del created[name]
        foreign = self.foreign_children[key]
        for child, (_, since) in list(foreign.items()):
            if now - since > self.config.retry_after_seconds:
                del foreign[child]  # try the create again: the object may be gone
        return Memory(
            created_jobs={name: uid for name, (uid, _) in created.items()},
            foreign_children={child: why for child, (why, _) in foreign.items()},
            taken_job_names=dict(self.taken_job_names[key]),
            reported=self.reported.get(key, frozenset()),
        )

    def found_in_the_way(self, key: tuple[str, str], exc: InTheWay) -> None:
        if exc.kind == "Job":
            self.taken_job_names[key][exc.name] = (
                f"Job {exc.name} holds the name of a validation Job of {key[1]} and is not "
                f"its own (its controller: {exc.controller or 'none'}): another name is used"
            )
        else:
            why = in_the_way(exc.kind, exc.name, exc.controller)
            self.foreign_children[key][(exc.kind, exc.name)] = (why, time.monotonic())

    def forget(self, namespace: str, name: str) -> None:
        self.written.pop((namespace, name), None)
        for memory in (
            self.created_jobs,
            self.foreign_children,
            self.taken_job_names,
            self.reported,
        ):
            memory.pop((namespace, name), None)
        for key in [
            k for k in self.applied if k[0] == namespace and k[2] in (name, f"{name}-pods")
        ]:
            del self.applied[key]


class Periodic(threading.Thread):
    """Every 30 s, a pass over every resource: revalidation, retries, and the catch-up after a
    pass that failed. A no-op (no API call) for a resource with nothing due.

    Not a kopf timer: kopf puts a finalizer on every object that has a timer, so a resource
    could not be deleted while the operator is not running.
    """

    def __init__(self, state: State):
        super().__init__(daemon=True, name="detinfer-periodic")
        self.state = state
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(TIMER_INTERVAL_SECONDS):
            self.tick()

    def tick(self) -> None:
        indexes = self.state.indexes
        if indexes is None:
            return  # no handler has run yet: nothing is known
        for key, bodies in list(indexes["resources_by_key"].items()):
            for body in list(bodies):
                try:
                    sync(self.state, key, body, indexes)
                except kopf.TemporaryError as exc:
                    log.info("%s/%s: %s (next pass in %ss)", *key, exc, TIMER_INTERVAL_SECONDS)
                except Exception:
                    log.exception("%s/%s: reconciliation failed", *key)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    # Handlers block on API calls, not the CPU: enough threads to keep the API server busy.
    settings.execution.max_workers = 16
    if "state" not in memo:
        memo["state"] = State(Cluster.connect(), OperatorConfig.from_env())
    memo["periodic"] = Periodic(memo["state"])
    memo["periodic"].start()


@kopf.on.cleanup()
def stop_periodic(memo: kopf.Memo, **_: Any) -> None:
    memo["periodic"].stopping.set()


# ---- indexes: the controller's only reads ----


@kopf.index(*DIS)
def resources_by_key(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): _plain(body)}


@kopf.index("v1", "pods", labels=OURS)
def pods_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: PodView.from_body(body)} if key else None


@kopf.index("batch", "v1", "jobs", labels=OURS)
def jobs_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: JobView.from_body(body)} if key else None


@kopf.index("apps", "v1", "deployments", labels=OURS)
def deployments_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: ChildView.from_body(body)} if key else None


@kopf.index("v1", "services", labels=OURS)
def services_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: ChildView.from_body(body)} if key else None


@kopf.index("apps", "v1", "replicasets", labels=OURS)
def replicasets_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    """The link from an engine pod to our Deployment (their labels come from its template)."""
    key = owner_key(body)
    return {key: ReplicaSetView.from_body(body)} if key else None


# ---- triggers ----


@kopf.on.event(*DIS)
def service_changed(
    type: str | None, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Created, updated, or found at start-up (type None): reconcile. Deleted: forget it.

    One watch-event handler instead of kopf's on.create/on.update/on.resume: reconciliation is
    level-based and needs no diff, and kopf's change detection would write its bookkeeping
    annotation on every change, a write (and a conflict with our status write) per event.
    """
    state: State = memo["state"]
    if type == "DELETED":
        # No finalizer: the children go with their owner references; only our memory remains.
        metrics.forget(namespace, name)
        state.forget(namespace, name)
        return
    sync(state, (namespace, name), _plain(body), kwargs)


@kopf.on.event("v1", "pods", labels=OURS)
@kopf.on.event("batch", "v1", "jobs", labels=OURS)
@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("apps", "v1", "replicasets", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
def child_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    key = owner_key(body)
    owners = kwargs["resources_by_key"].get(key) if key else None
    if not owners:
        return  # not ours, or its resource is gone (garbage collection follows)
    for owner in owners:
        sync(memo["state"], key, owner, kwargs)


# ---- the one reconciliation ----


CONFLICT_ATTEMPTS = 3
# Each child and the Job can be found in the way once per pass.
IN_THE_WAY_ATTEMPTS = 4


def sync(
    state: State, key: tuple[str, str], body: Mapping[str, Any], indexes: Mapping[str, Any]
) -> Plan:
    """Reconcile one resource from the indexes; on a write conflict, re-read it and plan again;
    when a create finds someone else's object in the way, remember it and plan again."""
    started = time.perf_counter()
    result = "error"
    state.indexes = state.indexes or {name: indexes[name] for name in INDEXES}
    with state.locks[key]:
        try:
            body = _freshest(body, state.written.get(key))
            conflicts = 0
            deleted: set[str] = set()  # Jobs deleted by an earlier attempt of this pass
            for _ in range(CONFLICT_ATTEMPTS + IN_THE_WAY_ATTEMPTS):
                jobs = list(indexes["jobs_by_owner"].get(key, []))
                the_plan = plan(
                    body,
                    pods=list(indexes["pods_by_owner"].get(key, [])),
                    jobs=jobs,
                    children=state.children(
                        key[0],
                        [
                            *indexes["deployments_by_owner"].get(key, []),
                            *indexes["services_by_owner"].get(key, []),
                        ],
                    ),
                    config=state.config,
                    now=datetime.now(UTC),
                    replicasets=list(indexes["replicasets_by_owner"].get(key, [])),
                    memory=state.memory(key, body, jobs),
                )
                try:
                    _execute(state, key, body, the_plan, deleted)
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
                    body = state.cluster.get_service(*key)
            else:
                raise kopf.TemporaryError("objects in the way of every attempt", delay=10)
            result = "invalid" if the_plan.invalid else "success"
            return the_plan
        except Conflict as exc:
            result = "conflict"
            raise kopf.TemporaryError(str(exc), delay=1) from None
        except ApiException as exc:
            if exc.status == 404:
                result = "gone"
                return Plan()  # deleted meanwhile: garbage collection takes the children
            raise kopf.TemporaryError(
                f"Kubernetes API: {exc.status} {exc.reason}", delay=10
            ) from None
        finally:
            metrics.reconcile_total.labels(result).inc()
            metrics.reconcile_duration.labels(result).observe(time.perf_counter() - started)


def _execute(
    state: State,
    key: tuple[str, str],
    body: Mapping[str, Any],
    p: Plan,
    deleted: set[str],
) -> None:
    namespace, name = key
    cluster = state.cluster
    owner_uid = (body.get("metadata") or {}).get("uid", "")

    def post(after: str) -> None:
        for event in p.events:
            if event.after == after:
                state.post_event(
                    dict(body), type=event.type, reason=event.reason, message=event.message
                )

    for obj in p.apply:
        child = (namespace, obj["kind"], obj["metadata"]["name"])
        cluster.apply(obj, owner_uid, seen=child[1:] in p.observed_hashes)
        metrics.api_writes_total.labels(f"apply-{obj['kind']}").inc()
        state.applied[child] = (
            applied_hash(obj) or "",
            p.observed_hashes.get(child[1:]),
            owner_uid,
        )
    to_delete = [job for job in p.delete_jobs if job not in deleted]
    for job in to_delete:
        cluster.delete_job(namespace, job, p.delete_job_uids[job])
        metrics.api_writes_total.labels("delete-job").inc()
        deleted.add(job)
    if to_delete:
        post("job-deleted")
    if p.create_job is not None:
        job_name = p.create_job["metadata"]["name"]
        created = state.created_jobs[key]
        uid, new = cluster.create_job(p.create_job, {n: u for n, (u, _) in created.items()})
        created.setdefault(job_name, (uid, time.monotonic()))
        # The status records the Job by the UID that only the create response tells.
        record = (p.status or {}).get("validationJob") or {}
        if record.get("name") == job_name:
            record["uid"] = uid
        if new:  # a Job that existed already was announced when it was made
            metrics.api_writes_total.labels("create-job").inc()
            post("job-created")
    for pod, condition in p.pod_conditions.items():
        cluster.set_pod_condition(namespace, pod, condition)
        metrics.api_writes_total.labels("pod-condition").inc()
    status = body.get("status") or {}
    if p.status is not None:
        written = cluster.patch_status(
            namespace, name, p.status, status, (body.get("metadata") or {}).get("resourceVersion")
        )
        metrics.api_writes_total.labels("status").inc()
        state.written[key] = written
        status = p.status
    # Transitions are announced only once the status that records them is written: a pass
    # that conflicts posts nothing, and its retry posts them once.
    post("status")
    state.reported[key] = frozenset(p.ignored)
    if status:
        metrics.observe(namespace, name, status, p.consumed)


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


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    # A private copy: kopf's bodies are views over data it may replace.
    return copy.deepcopy({k: body[k] for k in body})
