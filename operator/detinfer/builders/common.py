"""What every child shares: names, labels, owner references, the revision and the applied hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.engines import kinds

REVISION_LENGTH = 16


def stable_hash(value: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of `value`, in hex."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def revision_of(dis: DeterministicInferenceService) -> str:
    """Hash of every spec field that can change the outputs.

    Replicas, resources other than the GPU product, and the validation settings are left out:
    changing them must not restart or re-validate the pods. Nor are the key Secrets: new pods that
    only take new keys are held to the recorded fingerprint like any other new pod. The SGLang release and its numerics
    are in (engine.version, engine.numerics: they change the outputs); the reference engine
    reads no numerics, so they are left out for it. The recipe counts changes to how a spec
    becomes pods (2: the numerics environment, the per-release flags and probes).
    """
    spec = dis.spec.to_wire()
    engine = dict(spec["engine"])
    engine.pop("allowMutableImage", None)
    # Which Secrets hold the keys changes who may call, not what the engine computes.
    engine.pop("apiKeySecret", None)
    engine.pop("adminApiKeySecret", None)
    engine = kinds.of(dis.spec).outputs_fields(engine)
    return stable_hash(
        {
            "recipe": 2,
            "model": {"path": spec["model"]["path"], "revision": spec["model"].get("revision")},
            "engine": engine,
            "gpuProduct": spec["resources"].get("gpuProduct"),
        },
        REVISION_LENGTH,
    )


def engine_app_name(dis: DeterministicInferenceService) -> str:
    return kinds.of(dis.spec).app_name


def selector_labels(dis: DeterministicInferenceService, component: str) -> dict[str, str]:
    """Labels that select a DIS's pods of one component; immutable once a Deployment exists."""
    return {
        c.LABEL_INSTANCE: dis.name,
        c.LABEL_COMPONENT: component,
        c.LABEL_PART_OF: c.PART_OF,
    }


@dataclass(frozen=True)
class RevisionContext:
    """A resource at its current revision: what every child built for it shares, the revision
    hashed once per pass rather than once per child."""

    dis: DeterministicInferenceService
    revision: str

    @classmethod
    def of(cls, dis: DeterministicInferenceService) -> RevisionContext:
        return cls(dis, revision_of(dis))

    def labels(self, component: str, app_name: str) -> dict[str, str]:
        return {
            c.LABEL_NAME: app_name,
            **selector_labels(self.dis, component),
            c.LABEL_MANAGED_BY: c.MANAGED_BY,
            c.LABEL_REVISION: self.revision,
        }


def context_of(target: DeterministicInferenceService | RevisionContext) -> RevisionContext:
    """The builders take either: `detinfer render` and tests hand them a bare resource."""
    return target if isinstance(target, RevisionContext) else RevisionContext.of(target)


def metadata(
    dis: DeterministicInferenceService, name: str, object_labels: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": dis.namespace, "labels": object_labels}
    if dis.metadata.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "name": dis.name,
                "uid": dis.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the object with the hash of its own content, so an unchanged child is not re-applied."""
    digest = stable_hash(obj, 16)
    obj["metadata"].setdefault("annotations", {})[c.ANNOTATION_APPLIED_HASH] = digest
    return obj


def applied_hash(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(c.ANNOTATION_APPLIED_HASH)


def headless_service_name(dis: DeterministicInferenceService) -> str:
    return f"{dis.name}-pods"


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
NON_ROOT_UID = 65532
NON_ROOT_CONTAINER = {
    **RESTRICTED_CONTAINER,
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_UID,
    "runAsGroup": NON_ROOT_UID,
    "readOnlyRootFilesystem": True,
}
"""An engine container that needs no root and writes only its volumes."""


def http_probe(path: str) -> dict[str, Any]:
    """An httpGet probe of the engine container's serving port."""
    return {"httpGet": {"path": path, "port": c.ENGINE_PORT_NAME}}


def one_shot_job(
    meta: dict[str, Any],
    pod_labels: Mapping[str, str],
    container: str,
    image: str,
    command: list[str],
    args: list[str],
    deadline_seconds: int,
    ttl_seconds: int,
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    """A Job of one pod that talks to engine pods only (the validator, the benchmark): no
    retries, no ServiceAccount token or service links, restricted Pod Security, its summary
    as the termination message; `env` carries the engines' client key, if any."""
    spec: dict[str, Any] = {
        "name": container,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        **({"env": env} if env else {}),
        "terminationMessagePath": c.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {
                    "restartPolicy": "Never",
                    # It talks to engine pods only; it needs no API access.
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_UID,
                        "runAsGroup": NON_ROOT_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [spec],
                },
            },
        },
    }
