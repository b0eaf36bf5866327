"""The one module that writes to the Kubernetes API.

Reads come from the indexes (watch streams: kopf's of the resources, controller/watches.py of
their children); only writes go through here: server-side apply
of children, Job create/delete, the overhead baseline's delete, pod readiness-gate conditions, the DIS status and the Events.
The reads besides a conflict's re-read: an object found in the way of a create, to see who
controls it, and the validation Job the status records when the Jobs index does not show it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from detinfer import __version__, connection
from detinfer.api import constants as c
from detinfer.controller import trust
from detinfer.controller.observed import Controller, is_controlled_by

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
UPGRADE_ATTEMPTS = 3
# events.k8s.io/v1 limits (bytes): the note, and the reporting instance.
NOTE_LIMIT = 1024
INSTANCE_LIMIT = 128


def replacing(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `stored` into `wanted`: `wanted`, with null
    for every key of `stored` it no longer has, at every depth (a merge patch merges nested
    objects, so a field left out would otherwise stay). Lists are replaced whole anyway."""
    patch = dict(wanted)
    for key, old in stored.items():
        if key not in wanted:
            patch[key] = None
        elif isinstance(old, Mapping) and isinstance(wanted[key], Mapping):
            patch[key] = replacing(old, wanted[key])
    return patch


class Conflict(Exception):
    """The object changed since it was read; the next event will bring the new state."""


class InTheWay(Exception):
    """An object of the name the operator wanted exists and is not the operator's."""

    def __init__(self, kind: str, name: str, uid: str, controller: Controller | None):
        super().__init__(f"{kind} {name} is in the way (its controller: {controller or 'none'})")
        self.kind, self.name, self.uid, self.controller = kind, name, uid, controller


class Cluster:
    def __init__(self, api_client: client.ApiClient, instance: str | None = None):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)
        # In a pod the host name is the pod's name (HOSTNAME, as the kubelet sets it in every
        # container): it tells the operator's replicas apart.
        host = os.environ.get("HOSTNAME") or socket.gethostname()
        self.instance = (instance or host or "detinfer")[:INSTANCE_LIMIT]

    @classmethod
    def connect(cls, connections: int | None = None) -> Cluster:
        """In a pod: the service account; elsewhere: the current kubeconfig context.

        `connections`: the most the client keeps open, one per thread that calls it. The
        library's default is 5 per CPU of the host; with fewer than the threads, every call
        beyond them opens a new TLS connection and closes it after (the "Connection pool is
        full, discarding connection" warning): CPU on both ends, a handshake on the path."""
        connection.load()  # DETINFER_SERVICE_ACCOUNT_DIR, the pod's ServiceAccount, a kubeconfig
        configuration = client.Configuration.get_default_copy()
        if connections is not None:
            configuration.connection_pool_maxsize = connections
        api_client = client.ApiClient(configuration)
        api_client.user_agent = f"detinfer/{__version__}"  # tells our requests apart in audit logs
        return cls(api_client)

    def watch_client(self) -> client.ApiClient:
        """A client of the same cluster with a connection pool of its own: the children's
        watches hold their connections open, the writes must not wait for one."""
        api_client = client.ApiClient(self.api_client.configuration)
        api_client.user_agent = self.api_client.user_agent
        return api_client

    def get_dis(self, namespace: str, name: str) -> dict[str, Any]:
        """A fresh copy of a DeterministicInferenceService (only after a write conflict)."""
        return self.custom.get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.PLURAL, name
        )

    def apply(
        self, obj: Mapping[str, Any], owner_uid: str, seen: bool = True, created: bool = False
    ) -> None:
        """Server-side apply with field manager `detinfer`, taking over conflicting fields.

        A child the index has not shown as ours (`seen` False) is created instead: the index
        sees only objects with our labels, so an object of that name may exist unseen. One that
        exists and is not controlled by `owner_uid` raises InTheWay and is not touched.
        A child whose fields are still recorded as its create's (`created`) is taken over as
        applied first, so that this apply removes the fields it no longer sets. That costs a
        read and a patch, on the first change after the create only, not on the create's path.
        """
        kind = obj["kind"]
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        api = self._child_api(kind)
        if not seen:
            try:
                api["create"](namespace, obj, field_manager=c.FIELD_MANAGER, _preload_content=False)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                existing = json.loads(api["read"](name, namespace, _preload_content=False).data)
                controller = Controller.of(existing)
                if not is_controlled_by(controller, c.KIND, owner_uid):
                    raise InTheWay(
                        kind, name, (existing.get("metadata") or {}).get("uid", ""), controller
                    ) from None
                created = True  # ours, made before: maybe still as created (rare: read again)
            else:
                return
        if created:
            self._own_as_applied(api, name, namespace)
        api["patch"](
            name,
            namespace,
            obj,
            field_manager=c.FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,  # the response is not needed; decoding it costs CPU
        )

    def _child_api(self, kind: str) -> dict[str, Any]:
        if kind == "Deployment":
            return {
                "create": self.apps.create_namespaced_deployment,
                "read": self.apps.read_namespaced_deployment,
                "patch": self.apps.patch_namespaced_deployment,
            }
        if kind == "NetworkPolicy":
            return {
                "create": self.networking.create_namespaced_network_policy,
                "read": self.networking.read_namespaced_network_policy,
                "patch": self.networking.patch_namespaced_network_policy,
            }
        return {
            "create": self.core.create_namespaced_service,
            "read": self.core.read_namespaced_service,
            "patch": self.core.patch_namespaced_service,
        }

    def _own_as_applied(self, api: Mapping[str, Any], name: str, namespace: str) -> None:
        """Turn the create's field ownership into an apply's, as if the object had been applied.

        A create records its fields under an "Update" entry; later applies would then never
        remove a field that the spec no longer asks for. The entry is relabelled "Apply" (what
        client-go's csaupgrade does). The patch tests the entry it changes, because other
        controllers may write the object meanwhile (their entries may come first).
        """
        for _ in range(UPGRADE_ATTEMPTS):
            fresh = json.loads(api["read"](name, namespace, _preload_content=False).data)
            entries = fresh["metadata"].get("managedFields") or []
            index = next(
                (
                    i
                    for i, e in enumerate(entries)
                    if (e.get("manager"), e.get("operation"), e.get("subresource"))
                    == (c.FIELD_MANAGER, "Update", None)
                ),
                None,
            )
            if index is None:
                return
            entry = f"/metadata/managedFields/{index}"
            try:
                api["patch"](
                    name,
                    namespace,
                    [
                        {"op": "test", "path": f"{entry}/manager", "value": c.FIELD_MANAGER},
                        {"op": "test", "path": f"{entry}/operation", "value": "Update"},
                        {"op": "replace", "path": f"{entry}/operation", "value": "Apply"},
                    ],
                    _content_type=JSON_PATCH,
                    _preload_content=False,
                )
                return
            except ApiException as exc:
                if exc.status not in (409, 422):  # 422: a test failed, the list moved
                    raise
        log.warning("%s/%s: could not take over the fields of its creation", namespace, name)

    def create_job(self, job: Mapping[str, Any], created: Mapping[str, str]) -> tuple[str, bool]:
        """Create a validation Job: (its UID, whether this call created it).

        A Job of that name that this process created before (`created`: name -> UID) is
        harmless, and so is the same run made by an earlier process of the operator that could
        not record it (controlled by the same resource's UID, the same pod template:
        trust.same_validation_run): it is adopted. Any other raises InTheWay: validation Job
        names are predictable.
        """
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        try:
            response = self.batch.create_namespaced_job(namespace, job, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            if name in created:
                return created[name], False
            existing = self.read_job(namespace, name)
            if existing is None:  # deleted since: the next pass creates it
                raise
            if trust.same_validation_run(existing, job):
                log.info(
                    "%s/%s: adopting validation Job %s, the run it is to start",
                    namespace,
                    name,
                    name,
                )
                return existing["metadata"]["uid"], False
            raise InTheWay(
                "Job",
                name,
                (existing.get("metadata") or {}).get("uid", ""),
                Controller.of(existing),
            ) from None
        return json.loads(response.data)["metadata"]["uid"], True

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job by name, None if there is none: one found in the way of a create, or the one
        the status records when the Jobs index does not show it (controller/sync.py)."""
        try:
            response = self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(response.data)
        return body

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete our Job; only that one (a precondition on its UID), never a namesake."""
        _delete_by_uid(self.batch.delete_namespaced_job, namespace, name, uid)

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        """Delete our Deployment (the overhead baseline); only that one (a precondition on its
        UID), never a namesake."""
        _delete_by_uid(self.apps.delete_namespaced_deployment, namespace, name, uid)

    def delete_network_policy(self, namespace: str, name: str, uid: str) -> None:
        """Delete our NetworkPolicy (spec.networkPolicy turned off), by UID as above."""
        _delete_by_uid(self.networking.delete_namespaced_network_policy, namespace, name, uid)

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None:
        """Set one condition on pods/status; a strategic merge keeps the kubelet's conditions."""
        try:
            self.core.patch_namespaced_pod_status(
                pod,
                namespace,
                {"status": {"conditions": [condition]}},
                _content_type=STRATEGIC,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:  # the pod is gone: nothing to gate
                raise

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        stored: Mapping[str, Any],
        resource_version: str | None,
    ) -> dict[str, Any]:
        """Replace status, failing with Conflict when the object moved on since it was read.

        `stored`: the status as read (at `resource_version`)."""
        body: dict[str, Any] = {"status": replacing(stored, status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return self.custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, c.PLURAL, name, body, _content_type=MERGE
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{namespace}/{name} changed while it was reconciled") from None
            raise

    def post_event(
        self,
        regarding: Mapping[str, str],
        type_: str,
        reason: str,
        note: str,
        action: str,
        at: datetime | None = None,
    ) -> None:
        """Post an events.k8s.io/v1 Event from detinfer about `regarding`, that happened `at`
        (now by default).

        Events are helpful but auxiliary: one that cannot be posted is logged, and the pass
        goes on (its status write has already happened)."""
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # Named as client-go names Events: the object's name, a dot, a unique suffix.
            "metadata": {
                "name": f"{regarding['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": regarding["namespace"],
            },
            "eventTime": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": c.REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "note": note.encode()[:NOTE_LIMIT].decode(errors="ignore"),
            "type": type_,
            "regarding": dict(regarding),
        }
        try:
            self.events.create_namespaced_event(
                regarding["namespace"], body, _preload_content=False
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning(
                "%s/%s: could not post the %s Event: %s",
                regarding["namespace"],
                regarding["name"],
                reason,
                exc,
            )


def _delete_by_uid(delete: Any, namespace: str, name: str, uid: str) -> None:
    """Delete with a precondition on the UID, in the background; gone already is fine."""
    try:
        delete(
            name,
            namespace,
            body=client.V1DeleteOptions(
                propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid)
            ),
            _preload_content=False,
        )
    except ApiException as exc:
        if exc.status not in (404, 409):  # gone, or the name is someone else's now
            raise
