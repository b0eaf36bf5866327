"""The kopf registrations: start-up, the indexes (the controller's only reads), and the triggers.

Every trigger only queues its resource (controller/workqueue.py) and returns; the workers run the
same level-based `sync` of one resource (controller/sync.py) for a watch event of the resource
(created, updated, found at start-up, deleted), one of its pods, Jobs, Services, ReplicaSets or
its Deployment changing, or the periodic pass (controller/periodic.py). Index functions and
triggers are coroutines: kopf runs them on its event loop, never in its thread pool, so an index
is up to date as soon as its event arrives, whatever the workers are doing.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from detinfer import metrics
from detinfer.api import constants as c
from detinfer.config import OperatorConfig
from detinfer.controller.cluster import Cluster
from detinfer.controller.events import EventPoster
from detinfer.controller.observed import (
    ChildView,
    JobView,
    PodView,
    ReplicaSetView,
    owner_key,
)
from detinfer.controller.periodic import Periodic
from detinfer.controller.state import State
from detinfer.controller.sync import INDEXES, lean, sync_key
from detinfer.controller.workqueue import Workers

DIS = (c.GROUP, c.VERSION, c.PLURAL)
OURS = {c.LABEL_PART_OF: c.PART_OF}
# Passes block on API calls, not the CPU: enough threads to keep the API server busy, few
# enough not to swamp it (32 made its p99 twice as slow for everyone, docs/benchmarks.md).
WORKERS = 16
EVENT_THREADS = 2


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    # detinfer posts its own Events (Cluster.post_event); any Event kopf posts names detinfer too.
    settings.posting.reporting_component = c.REPORTING_CONTROLLER
    if "state" not in memo:
        cluster = Cluster.connect()
        memo["events"] = EventPoster(cluster.post_event, EVENT_THREADS)
        memo["state"] = State(cluster, OperatorConfig.from_env(), memo["events"])
    state: State = memo["state"]
    metrics.queue_depth.set_function(lambda: len(state.queue))
    memo["workers"] = Workers(state.queue, lambda key: sync_key(state, key), WORKERS, "detinfer")
    memo["workers"].start()
    memo["periodic"] = Periodic(state)
    memo["periodic"].start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo["periodic"].stopping.set()
    memo["workers"].stop()
    if "events" in memo:
        memo["events"].stop()


# ---- indexes: the controller's only reads ----


@kopf.index(*DIS)
async def resources_by_key(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict:
    # The resource is namespaced: kopf's type allows None for cluster-scoped ones only.
    return {(namespace or "", name): _plain(body)}


@kopf.index("v1", "pods", labels=OURS)
async def pods_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: PodView.from_body(body)} if key else None


@kopf.index("batch", "v1", "jobs", labels=OURS)
async def jobs_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: JobView.from_body(body)} if key else None


@kopf.index("apps", "v1", "deployments", labels=OURS)
async def deployments_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: ChildView.from_body(body)} if key else None


@kopf.index("v1", "services", labels=OURS)
async def services_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    key = owner_key(body)
    return {key: ChildView.from_body(body)} if key else None


@kopf.index("apps", "v1", "replicasets", labels=OURS)
async def replicasets_by_owner(body: kopf.Body, **_: Any) -> dict | None:
    """The link from an engine pod to our Deployment (their labels come from its template)."""
    key = owner_key(body)
    return {key: ReplicaSetView.from_body(body)} if key else None


# ---- triggers ----


@kopf.on.event(*DIS)
async def dis_changed(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Created, updated, found at start-up (type None) or deleted: queue a pass (a deleted one
    is forgotten by it).

    One watch-event handler instead of kopf's on.create/on.update/on.resume: reconciliation is
    level-based and needs no diff, and kopf's change detection would write its bookkeeping
    annotation on every change, a write (and a conflict with our status write) per event.
    A resource that no pass has written a status for yet goes to the queue's front lane.
    """
    state = _state(memo, kwargs)
    state.queue.add((namespace or "", name), front=not body.get("status"))


@kopf.on.event("v1", "pods", labels=OURS)
@kopf.on.event("batch", "v1", "jobs", labels=OURS)
@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("apps", "v1", "replicasets", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
async def child_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    key = owner_key(body)
    if key is None:
        return  # not ours
    if not kwargs["resources_by_key"].get(key):
        return  # its resource is gone (garbage collection follows)
    _state(memo, kwargs).queue.add(key)


def _state(memo: kopf.Memo, kwargs: Mapping[str, Any]) -> State:
    """The shared state, holding kopf's indexes (live views) from the first trigger on."""
    state: State = memo["state"]
    if state.indexes is None:
        state.indexes = {name: kwargs[name] for name in INDEXES}
    return state


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy (kopf's bodies are views over data it may replace), without the
    managedFields, which nothing reads from the resource and which weigh more than its spec."""
    return lean(copy.deepcopy({k: body[k] for k in body}))
