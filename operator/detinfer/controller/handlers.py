"""The kopf registrations: start-up, the indexes (the controller's only reads), and the triggers.

Every trigger leads to the same level-based `sync` of one resource (controller/sync.py): a watch
event of the resource (created, updated, found at start-up), one of its pods, Jobs, Services,
ReplicaSets or its Deployment changing, or the periodic pass (controller/periodic.py).
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
from detinfer.controller.observed import (
    ChildView,
    JobView,
    PodView,
    ReplicaSetView,
    owner_key,
)
from detinfer.controller.periodic import Periodic
from detinfer.controller.state import State
from detinfer.controller.sync import sync

DIS = (c.GROUP, c.VERSION, c.PLURAL)
OURS = {c.LABEL_PART_OF: c.PART_OF}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    # detinfer posts its own Events (Cluster.post_event); any Event kopf posts names detinfer too.
    settings.posting.reporting_component = c.REPORTING_CONTROLLER
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
def resources_by_key(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict:
    # The resource is namespaced: kopf's type allows None for cluster-scoped ones only.
    return {(namespace or "", name): _plain(body)}


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
def dis_changed(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Created, updated, or found at start-up (type None): reconcile. Deleted: forget it.

    One watch-event handler instead of kopf's on.create/on.update/on.resume: reconciliation is
    level-based and needs no diff, and kopf's change detection would write its bookkeeping
    annotation on every change, a write (and a conflict with our status write) per event.
    """
    state: State = memo["state"]
    namespace = namespace or ""  # namespaced: never None in fact
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
    if key is None:
        return  # not ours
    owners = kwargs["resources_by_key"].get(key)
    if not owners:
        return  # its resource is gone (garbage collection follows)
    for owner in owners:
        sync(memo["state"], key, owner, kwargs)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    # A private copy: kopf's bodies are views over data it may replace.
    return copy.deepcopy({k: body[k] for k in body})
