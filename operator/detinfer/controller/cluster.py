"""The one module that writes to the Kubernetes API.

Reads come from kopf's indexes (watch streams); only writes go through here: server-side apply
of children, Job create/delete, pod readiness-gate conditions and the DIS status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from detinfer import __version__
from detinfer.api import constants as c

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class Conflict(Exception):
    """The object changed since it was read; the next event will bring the new state."""


class Cluster:
    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls) -> Cluster:
        """In a pod: the service account; elsewhere: the current kubeconfig context."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
        api_client.user_agent = f"detinfer/{__version__}"  # tells our requests apart in audit logs
        return cls(api_client)

    def get_service(self, namespace: str, name: str) -> dict[str, Any]:
        """A fresh copy of a DeterministicInferenceService (only after a write conflict)."""
        return self.custom.get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.PLURAL, name
        )

    def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply with field manager `detinfer`, taking over conflicting fields."""
        kind = obj["kind"]
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
        }[kind]
        patch(
            name,
            namespace,
            obj,
            field_manager=c.FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,  # the response is not needed; decoding it costs CPU
        )

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create a validation Job; False when one of that name exists already (harmless)."""
        try:
            self.batch.create_namespaced_job(
                job["metadata"]["namespace"], job, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

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
        old_status: Mapping[str, Any] | None,
        resource_version: str | None,
    ) -> dict[str, Any]:
        """Replace status, failing with Conflict when the object moved on since it was read."""
        body: dict[str, Any] = {"status": dict(status)}
        for key in old_status or {}:
            if key not in status:
                body["status"][key] = None  # merge patch: remove what is no longer there
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
