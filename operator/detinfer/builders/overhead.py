"""The benchmark Job: `detinfer bench` against one validated pod and the baseline, no API access.

Built like the validation Job (builders/job.py): the validator's image, backoffLimit 0, a
deadline, a TTL, a restricted security context, no ServiceAccount token; its summary (the
OverheadSummary, api/overhead.py) is its termination message.
"""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.builders import common
from detinfer.builders.deployment import (
    baseline_deployment_name,
    build_baseline_deployment,
    client_key_environment,
)
from detinfer.builders.job import Endpoint
from detinfer.builders.job_args import BenchArgs
from detinfer.builders.process_line import BENCH_COMMAND
from detinfer.config import OperatorConfig

__all__ = [
    "baseline_deployment_name",
    "bench_args",
    "bench_job_name",
    "build_baseline_deployment",
    "build_bench_job",
]


def bench_job_name(
    dis: DeterministicInferenceService,
    revision: str,
    deterministic: str,
    baseline: str,
    after: str | None,
) -> str:
    """One name per (revision, pods, previous measurement), as validation Jobs are named (the
    key differs, so the two never share a name)."""
    key = {"overhead": revision, "pods": [deterministic, baseline], "after": after}
    return f"{dis.name}-{common.stable_hash(key, 10)}"


def bench_args(
    dis: DeterministicInferenceService, deterministic: Endpoint, baseline: Endpoint
) -> list[str]:
    w = dis.spec.overhead.workload
    return BenchArgs(
        deterministic=deterministic.url,
        baseline=baseline.url,
        concurrency=tuple(w.concurrency),
        requests=w.requests,
        input_tokens=w.input_tokens,
        output_tokens=w.output_tokens,
        rounds=w.rounds,
        seed=w.seed,
    ).to_args()


def build_bench_job(
    target: DeterministicInferenceService | common.RevisionContext,
    deterministic: Endpoint,
    baseline: Endpoint,
    name: str,
    config: OperatorConfig,
) -> dict[str, Any]:
    context = common.context_of(target)
    dis = context.dis
    pod_labels = context.labels(c.COMPONENT_BENCH, "detinfer-bench")
    meta = common.metadata(dis, name, dict(pod_labels))
    meta["annotations"] = {c.ANNOTATION_PODS: f"{deterministic.pod},{baseline.pod}"}
    return common.one_shot_job(
        meta,
        pod_labels,
        c.BENCH_CONTAINER,
        config.validator_image,
        list(BENCH_COMMAND),
        bench_args(dis, deterministic, baseline),
        dis.spec.overhead.timeout_seconds,
        config.job_ttl_seconds,
        client_key_environment(dis),
    )
