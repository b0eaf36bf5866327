"""Pure functions from a DeterministicInferenceService to the objects the operator creates.

No I/O, no clock, no randomness: the same input always gives the same objects.
"""

from __future__ import annotations

from typing import Any

from detinfer.api.resource import DeterministicInferenceService
from detinfer.builders.common import RevisionContext, context_of, revision_of
from detinfer.builders.deployment import build_deployment
from detinfer.builders.job import Endpoint, build_validation_job, validation_job_name
from detinfer.builders.network_policy import build_network_policies
from detinfer.builders.overhead import (
    baseline_deployment_name,
    bench_job_name,
    build_baseline_deployment,
    build_bench_job,
)
from detinfer.builders.services import build_client_service, build_headless_service
from detinfer.config import OperatorConfig


def build_children(
    target: DeterministicInferenceService | RevisionContext,
    serving_revision: str,
    config: OperatorConfig,
) -> list[dict[str, Any]]:
    """The long-lived children, in the order they are applied: the Deployment first, because
    its pods take longest to come up."""
    context = context_of(target)
    return [
        build_deployment(context),
        build_headless_service(context),
        build_client_service(context, serving_revision),
        *build_network_policies(context, config),
    ]


def render_objects(
    dis: DeterministicInferenceService, config: OperatorConfig
) -> list[dict[str, Any]]:
    """What `detinfer render` shows: the children, and the first validation Job as it would be
    for pods named and addressed by placeholders (the operator fills in real ones)."""
    context = RevisionContext.of(dis)
    endpoints = [
        Endpoint(pod=f"{dis.name}-<pod-{i}>", ip=f"<pod-{i}-ip>") for i in range(dis.spec.replicas)
    ]
    expected = dis.spec.validation.expected_fingerprint
    name = validation_job_name(dis, context.revision, [e.pod for e in endpoints], None)
    job = build_validation_job(context, endpoints, expected, name, config)
    return [*build_children(context, context.revision, config), job]


__all__ = [
    "Endpoint",
    "RevisionContext",
    "baseline_deployment_name",
    "bench_job_name",
    "build_baseline_deployment",
    "build_bench_job",
    "build_children",
    "build_client_service",
    "build_deployment",
    "build_headless_service",
    "build_network_policies",
    "build_validation_job",
    "render_objects",
    "revision_of",
    "validation_job_name",
]
