"""The kopf registrations: start-up, the resources' index and their trigger; and the trigger of
the children's watches.

Every trigger only queues its resource (controller/workqueue.py) and returns; the workers run the
same level-based `sync` of one resource (controller/sync.py) for a watch event of the resource
(created, updated, found at start-up, deleted), a change in the view of one of its pods, Jobs,
Services, ReplicaSets or its Deployment (controller/watches.py, outside kopf), or the periodic
pass (controller/periodic.py). The index function and the trigger are coroutines: kopf runs them
on its event loop, never in its thread pool, so the index is up to date as soon as its event
arrives, whatever the workers are doing.
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
from detinfer.controller.periodic import Periodic
from detinfer.controller.state import State
from detinfer.controller.sync import lean, sync_key, warm_up
from detinfer.controller.watches import ChildWatches
from detinfer.controller.workqueue import Workers

DIS = (c.GROUP, c.VERSION, c.PLURAL)
# Passes block on API calls, not the CPU: enough threads to keep the API server busy, few
# enough not to swamp it (32 made its p99 twice as slow for everyone, docs/benchmarks.md).
WORKERS = 16
EVENT_THREADS = 2


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.posting.level = logging.INFO
    # detinfer posts its own Events (Cluster.post_event); any Event kopf posts names detinfer too.
    settings.posting.reporting_component = c.REPORTING_CONTROLLER
    if "state" not in memo:
        cluster = Cluster.connect(connections=WORKERS + EVENT_THREADS)
        memo["events"] = EventPoster(cluster.post_event, EVENT_THREADS)
        memo["state"] = State(cluster, OperatorConfig.from_env(), memo["events"])
    state: State = memo["state"]
    if "watches" not in memo:
        watches = ChildWatches(
            state.cluster.watch_client(),
            lambda key, front: child_changed(state, key, front),
            memo.get("namespaces"),
        )
        try:
            watches.start()  # returns once every kind is listed
        except Exception:
            watches.stop()  # kopf tries the start-up again, with watches of its own
            raise
        memo["watches"] = watches
    # Every index, from here on: kopf's of the resources (empty until its watch lists) too.
    state.indexes = memo["watches"].with_resources(kwargs["resources_by_key"])
    warm_up(state.config)  # before kopf opens the watch of the resources
    metrics.queue_depth.set_function(lambda: len(state.queue))
    metrics.events_pending.set_function(lambda: memo["events"].pending)
    memo["workers"] = Workers(state.queue, lambda key: sync_key(state, key), WORKERS, "detinfer")
    memo["workers"].start()
    memo["periodic"] = Periodic(state)
    memo["periodic"].start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo["periodic"].stopping.set()
    memo["workers"].stop()
    if "watches" in memo:
        memo["watches"].stop()
    if "events" in memo:
        memo["events"].stop()


# ---- the resources' index (the children's are in controller/watches.py) ----


@kopf.index(*DIS)
async def resources_by_key(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict:
    # The resource is namespaced: kopf's type allows None for cluster-scoped ones only.
    return {(namespace or "", name): _plain(body)}


# ---- triggers ----


@kopf.on.event(*DIS)
async def dis_changed(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Created, updated, found at start-up (type None) or deleted: queue a pass (a deleted one
    is forgotten by it).

    One watch-event handler instead of kopf's on.create/on.update/on.resume: reconciliation is
    level-based and needs no diff, and kopf's change detection would write its bookkeeping
    annotation on every change, a write (and a conflict with our status write) per event.
    A resource that no pass has written a status for yet goes to the queue's front lane.
    """
    state: State = memo["state"]
    state.queue.add((namespace or "", name), front=not body.get("status"))


def child_changed(state: State, key: tuple[str, str], front: bool = False) -> None:
    """A child's view changed (controller/watches.py): queue its resource, if it is known; in
    the front lane when the change is a result (`watches.decides`)."""
    if state.indexes is not None and state.indexes.resources.get(key):
        state.queue.add(key, front=front)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy (kopf's bodies are views over data it may replace), without the
    managedFields, which nothing reads from the resource and which weigh more than its spec."""
    return lean(copy.deepcopy({k: body[k] for k in body}))
