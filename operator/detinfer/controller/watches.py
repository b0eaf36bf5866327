"""The children's watches and indexes: pods, Jobs, ReplicaSets, Deployments, Services and
NetworkPolicies with our label, watched outside kopf.

These kinds bring most of the watch events (an engine pod alone changes five or six times on
its way to Ready, a Deployment and its ReplicaSet with every status update of the
kube-controller-manager), and the controller needs only a compact view of each object. kopf
would take every one of them through its per-object machinery on its one event loop, where the
resources' own events wait behind them (docs/benchmarks.md). Here one thread per kind lists and
watches with the label selector on the server, turns each object into its view
(controller/observed.py), keeps it in an `OwnerIndex` by the resource the object's instance label
names, and queues that resource only when the view changed: a status update that changes nothing
the controller reads queues nothing. A validator's or benchmark's pod that has ended queues its
resource in the front lane (controller/workqueue.py): a verdict waits on that pass, and it should
not wait behind the follow-up passes that the kube-controller-manager's status updates bring.

The instance label only routes: what an object is worth is decided by owner UIDs
(controller/trust.py), as before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from detinfer.api import constants as c
from detinfer.controller.observed import (
    ChildView,
    JobView,
    PodView,
    ReplicaSetView,
    owner_key,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]
V = TypeVar("V")

SELECTOR = f"{c.LABEL_PART_OF}={c.PART_OF}"
# The server ends a watch after this long; it is opened again from the last version seen.
WATCH_SECONDS = 300
# After an error (the API server unreachable, a broken stream): wait, then list again.
RETRY_SECONDS = 1.0
LIST_CHUNK = 500


class OwnerIndex(Generic[V]):
    """The views of one kind by the resource they belong to: written by one watch thread, read
    by the workers (a lock: a reader never sees a half-updated mapping)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Key, dict[str, V]] = {}
        self._key_of: dict[str, Key] = {}
        # The watches that fill this index (one per namespace, or one for all) that have not
        # completed their first list yet.
        self._unlisted: set[object] = set()
        self._synced = True

    def expect(self, source: object) -> None:
        """`source` (a watch) fills this index: it is not synced until that one has listed."""
        with self._lock:
            self._unlisted.add(source)
            self._synced = False

    def listed(self, source: object) -> None:
        with self._lock:
            self._unlisted.discard(source)
            self._synced = not self._unlisted

    @property
    def synced(self) -> bool:
        """Whether every watch of this index has listed its objects once: until then an object
        absent from the index may exist all the same, and nothing may be concluded from it.
        A plain attribute, read without the lock: every pass asks five times, and waiting for
        the lock while a watch thread held it was a sixth of the workers' time at 1000
        resources (docs/benchmarks.md)."""
        return self._synced

    def get(self, key: Key, default: Iterable[V] = ()) -> list[V]:
        with self._lock:
            views = self._by_key.get(key)
            return list(views.values()) if views else list(default)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._by_key

    def put(self, uid: str, key: Key | None, view: V | None) -> set[Key]:
        """Records the object `uid` (None for the view or key: it no longer counts, e.g. its
        label is gone); the resources whose views changed."""
        with self._lock:
            changed = set()
            old_key = self._key_of.get(uid)
            old = self._by_key.get(old_key, {}).get(uid) if old_key else None
            if old_key is not None and (old_key != key or view is None):
                self._drop(uid, old_key)
                changed.add(old_key)
            if key is not None and view is not None:
                if old_key != key or old != view:
                    changed.add(key)
                self._by_key.setdefault(key, {})[uid] = view
                self._key_of[uid] = key
            return changed

    def _drop(self, uid: str, key: Key) -> None:
        views = self._by_key.get(key, {})
        views.pop(uid, None)
        if not views:
            self._by_key.pop(key, None)
        self._key_of.pop(uid, None)


@dataclass(frozen=True)
class Kind:
    """One watched kind: its index (the field of `Indexes`), its list calls, its view."""

    index: str
    # A list's items carry no kind (watch events do): ChildView reads it.
    kind: str
    list_all: Callable[..., Any]
    list_namespaced: Callable[..., Any]
    view: Callable[[Mapping[str, Any]], Any]


def kinds(api_client: client.ApiClient) -> list[Kind]:
    # Named as in controller/cluster.py (api.core, api.apps, api.batch): tests/chart matches the
    # calls the controller names against the chart's RBAC rules.
    api = SimpleNamespace(
        core=client.CoreV1Api(api_client),
        apps=client.AppsV1Api(api_client),
        batch=client.BatchV1Api(api_client),
        networking=client.NetworkingV1Api(api_client),
    )
    return [
        Kind(
            "pods",
            "Pod",
            api.core.list_pod_for_all_namespaces,
            api.core.list_namespaced_pod,
            PodView.from_body,
        ),
        Kind(
            "jobs",
            "Job",
            api.batch.list_job_for_all_namespaces,
            api.batch.list_namespaced_job,
            JobView.from_body,
        ),
        Kind(
            "deployments",
            "Deployment",
            api.apps.list_deployment_for_all_namespaces,
            api.apps.list_namespaced_deployment,
            ChildView.from_body,
        ),
        Kind(
            "services",
            "Service",
            api.core.list_service_for_all_namespaces,
            api.core.list_namespaced_service,
            ChildView.from_body,
        ),
        Kind(
            "network_policies",
            "NetworkPolicy",
            api.networking.list_network_policy_for_all_namespaces,
            api.networking.list_namespaced_network_policy,
            ChildView.from_body,
        ),
        Kind(
            "replicasets",
            "ReplicaSet",
            api.apps.list_replica_set_for_all_namespaces,
            api.apps.list_namespaced_replica_set,
            ReplicaSetView.from_body,
        ),
    ]


class ChildWatch(threading.Thread):
    """Lists and then watches one kind (in one namespace, or all), keeping `index` current and
    calling `changed(key, front)` for every resource whose views changed (`front`: the change
    is a result, see `decides`)."""

    def __init__(
        self,
        kind: Kind,
        index: OwnerIndex[Any],
        changed: Callable[[Key, bool], None],
        namespace: str | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"detinfer-watch-{kind.index}-{namespace or 'all'}")
        self.kind, self.index, self.changed, self.namespace = kind, index, changed, namespace
        self.listed = threading.Event()
        self.stopping = threading.Event()
        self._version: str | None = None
        # The objects of this watch: those of another namespace's watch are not ours to drop.
        self._uids: set[str] = set()
        index.expect(self)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self._version is None:
                    self._list()
                self._watch()
            except Exception as exc:  # the API server away, a broken stream: list again
                if self.stopping.is_set():
                    return
                log.warning("watch of %s: %s; listing again in %ss", self.name, exc, RETRY_SECONDS)
                self._version = None
                self.stopping.wait(RETRY_SECONDS)

    def _call(self, **kwargs: Any) -> Any:
        kwargs.update(label_selector=SELECTOR, _preload_content=False)
        if self.namespace is None:
            return self.kind.list_all(**kwargs)
        return self.kind.list_namespaced(self.namespace, **kwargs)

    def _list(self) -> None:
        objects: dict[str, tuple[Key, Any]] = {}
        token = None
        while True:
            page = json.loads(self._call(limit=LIST_CHUNK, _continue=token).data)
            for body in page.get("items") or []:
                view = self._view(body)
                if view is not None:
                    objects[view[0]] = view[1:]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        self._version = page["metadata"]["resourceVersion"]
        changed = self._replace(objects)
        self.index.listed(self)
        self.listed.set()
        for key in changed:
            self.changed(key, False)

    def _replace(self, objects: dict[str, tuple[Key, Any]]) -> set[Key]:
        changed: set[Key] = set()
        for uid in self._uids - set(objects):
            changed |= self.index.put(uid, None, None)
        for uid, (key, view) in objects.items():
            changed |= self.index.put(uid, key, view)
        self._uids = set(objects)
        return changed

    def _watch(self) -> None:
        response = self._call(
            watch=True,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(10, WATCH_SECONDS + 30),
        )
        try:
            for event in _events(response):
                if self.stopping.is_set():
                    return
                self.handle(event)
        finally:
            response.release_conn()

    def handle(self, event: Mapping[str, Any]) -> None:
        """One watch event: the index updated, the resources whose views changed queued."""
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = body.get("code")
            if code == 410:  # the version is too old: list again
                raise ApiException(status=410, reason="Gone (list again)")
            raise ApiException(status=code, reason=body.get("message"))
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:
            self._version = version
        if kind == "BOOKMARK":
            return
        uid = (body.get("metadata") or {}).get("uid", "")
        front = False
        if kind == "DELETED":
            changed = self.index.put(uid, None, None)
            self._uids.discard(uid)
        else:
            view = self._view(body)
            changed = self.index.put(uid, *view[1:]) if view else self.index.put(uid, None, None)
            if view:
                self._uids.add(uid)
                front = decides(view[2])
        for key in changed:
            self.changed(key, front)

    def _view(self, body: Mapping[str, Any]) -> tuple[str, Key, Any] | None:
        key = owner_key(body)
        if key is None:
            return None
        if "kind" not in body:
            body = {**body, "kind": self.kind.kind}
        return (body.get("metadata") or {}).get("uid", ""), key, self.kind.view(body)


def decides(view: Any) -> bool:
    """Whether a changed view is a result the resource waits on: a validator's or a benchmark's
    pod that has ended (its termination message holds the summary)."""
    return (
        isinstance(view, PodView)
        and view.component in (c.COMPONENT_VALIDATOR, c.COMPONENT_BENCH)
        and view.terminated is not None
    )


def _events(response: Any) -> Iterator[dict[str, Any]]:
    for line in iter_resp_lines(response):
        if line:
            yield json.loads(line)


@dataclass(frozen=True)
class Indexes:
    """Every index a pass reads, typed, and all of them present from the operator's start-up:
    kopf's of the resources (handlers.resources_by_key; kopf hands its indexes, empty until its
    watch lists, to the start-up handler) and the children's, one per kind."""

    resources: Mapping[Key, Collection[Mapping[str, Any]]]
    pods: OwnerIndex[PodView]
    jobs: OwnerIndex[JobView]
    deployments: OwnerIndex[ChildView]
    services: OwnerIndex[ChildView]
    network_policies: OwnerIndex[ChildView]
    replicasets: OwnerIndex[ReplicaSetView]

    def unsynced(self) -> list[str]:
        """The children's indexes whose watches have not listed yet (kopf's is complete
        before any handler that reads it runs)."""
        return [
            f.name
            for f in fields(self)
            if isinstance(index := getattr(self, f.name), OwnerIndex) and not index.synced
        ]


class ChildWatches:
    """The watches of every child kind, and their indexes by `Indexes` field."""

    def __init__(
        self,
        api_client: client.ApiClient,
        changed: Callable[[Key, bool], None],
        namespaces: Iterable[str] | None = None,
    ) -> None:
        self.indexes: dict[str, OwnerIndex[Any]] = {}
        self.watches: list[ChildWatch] = []
        for kind in kinds(api_client):
            index: OwnerIndex[Any] = OwnerIndex()
            self.indexes[kind.index] = index
            scopes: list[str | None] = [*namespaces] if namespaces else [None]
            for namespace in scopes:
                self.watches.append(ChildWatch(kind, index, changed, namespace))

    def start(self, timeout: float = 120.0) -> None:
        """Starts every watch and waits until each has listed its objects: a pass must not
        plan from an index that has not seen the children that exist."""
        for watch in self.watches:
            watch.start()
        deadline = time.monotonic() + timeout
        for watch in self.watches:
            if not watch.listed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{watch.name} has not listed its objects in {timeout:.0f} s")

    def with_resources(self, resources: Mapping[Key, Collection[Mapping[str, Any]]]) -> Indexes:
        """Every index, with kopf's of the resources."""
        return Indexes(resources=resources, **self.indexes)

    def stop(self) -> None:
        for watch in self.watches:
            watch.stopping.set()
