"""The two Services: one for clients (validated pods of one revision only), one headless for the validator."""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.builders import common

_PORTS = [
    {
        "name": c.ENGINE_PORT_NAME,
        "port": c.ENGINE_PORT,
        "targetPort": c.ENGINE_PORT_NAME,
        "protocol": "TCP",
    }
]


def build_client_service(
    target: DeterministicInferenceService | common.RevisionContext, serving_revision: str
) -> dict[str, Any]:
    """Clients reach only Ready pods (validated, through the readiness gate) of `serving_revision`,
    so a rollout never mixes the outputs of two revisions."""
    context = common.context_of(target)
    dis = context.dis
    obj_labels = context.labels(c.COMPONENT_ENGINE, common.engine_app_name(dis))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(dis, dis.name, obj_labels),
        "spec": {
            "type": "ClusterIP",
            "selector": {
                **common.selector_labels(dis, c.COMPONENT_ENGINE),
                c.LABEL_REVISION: serving_revision,
            },
            "ports": _PORTS,
        },
    }
    return common.with_applied_hash(service)


def build_headless_service(
    target: DeterministicInferenceService | common.RevisionContext,
) -> dict[str, Any]:
    """Every engine pod, ready or not, so the validator can reach pods before they take traffic."""
    context = common.context_of(target)
    dis = context.dis
    obj_labels = context.labels(c.COMPONENT_ENGINE, common.engine_app_name(dis))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(dis, common.headless_service_name(dis), obj_labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": common.selector_labels(dis, c.COMPONENT_ENGINE),
            "ports": _PORTS,
        },
    }
    return common.with_applied_hash(service)
