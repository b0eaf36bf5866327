"""Objects as the API server would hand them to the operator, for unit tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from detinfer.api import constants as c
from detinfer.api.overhead import LevelResult, OverheadSummary, SideFigures
from detinfer.api.spec import OverheadWorkload

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
REVISION = "0123456789abcdef0123456789abcdef01234567"
FINGERPRINT = "sha256:" + "f0" * 32
OTHER_FINGERPRINT = "sha256:" + "0f" * 32
DIS_UID = "11111111-2222-3333-4444-555555555555"
DEPLOYMENT_UID = "d0000000-0000-0000-0000-000000000001"
REPLICASET_UID = "e0000000-0000-0000-0000-000000000001"


def controller_ref(kind: str, name: str, uid: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": True}]


def replicaset(
    uid: str = REPLICASET_UID, deployment_uid: str = DEPLOYMENT_UID, name: str = "qwen-5d8f"
) -> dict[str, Any]:
    """A ReplicaSet of the Deployment `deployment_uid`, as the Deployment controller makes it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": uid,
            "labels": {c.LABEL_INSTANCE: "qwen", c.LABEL_PART_OF: c.PART_OF},
            "ownerReferences": controller_ref("Deployment", "qwen", deployment_uid),
        },
    }


def deployment_view_body(uid: str = DEPLOYMENT_UID, owner_uid: str = DIS_UID) -> dict[str, Any]:
    """The DIS's Deployment as the index shows it (with no applied hash: it gets applied)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "qwen",
            "namespace": "ml",
            "uid": uid,
            "ownerReferences": controller_ref(c.KIND, "qwen", owner_uid),
        },
    }


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def dis(**spec_overrides: Any) -> dict[str, Any]:
    """A valid DIS body; keyword arguments are deep-merged into spec (None deletes a key). With
    kind Reference, engine.version is dropped unless the overrides give one."""
    body = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": "qwen",
            "namespace": "ml",
            "uid": DIS_UID,
            "generation": 1,
            "resourceVersion": "100",
        },
        "spec": {
            "model": {"path": "Qwen/Qwen3-8B", "revision": REVISION},
            "engine": {"image": f"lmsysorg/sglang@{DIGEST}", "version": "0.5.23"},
            "replicas": 2,
            "resources": {"gpusPerReplica": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
        },
    }
    _merge(body["spec"], spec_overrides)
    engine = body["spec"]["engine"]
    if engine.get("kind") == "Reference" and "version" not in spec_overrides.get("engine", {}):
        engine.pop("version", None)
    return body


def _merge(into: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def engine_pod(
    name: str,
    revision: str,
    *,
    ip: str | None = "10.0.0.1",
    ready: bool = True,
    phase: str = "Running",
    gate: dict[str, Any] | None = None,
    unschedulable: str | None = None,
    instance: str = "qwen",
    ready_since: str = "2026-11-22T10:00:00Z",
    controller: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An engine pod, made by ReplicaSet REPLICASET_UID unless `controller` says otherwise
    ([] for none)."""
    conditions = [
        {
            "type": "ContainersReady",
            "status": "True" if ready else "False",
            "lastTransitionTime": ready_since,
        }
    ]
    if unschedulable:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    if gate:
        conditions.append(gate)
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if ip:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "ownerReferences": controller_ref("ReplicaSet", "qwen-5d8f", REPLICASET_UID)
            if controller is None
            else controller,
            "labels": {
                c.LABEL_INSTANCE: instance,
                c.LABEL_COMPONENT: c.COMPONENT_ENGINE,
                c.LABEL_PART_OF: c.PART_OF,
                c.LABEL_REVISION: revision,
            },
        },
        "status": status,
    }


def validator_pod(
    job: dict[str, Any],
    exit_code: int | None,
    message: str | None = None,
    *,
    name: str | None = None,
    controller: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Job's pod; terminated with `exit_code` and `message` unless exit_code is None.

    Made by the Job (its UID) with its template's containers, unless `controller` ([] for none)
    or `containers` say otherwise, as a forger would.
    """
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
            }
        }
        if message is not None:
            state["terminated"]["message"] = message
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    labels["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
    pod_name = name or job["metadata"]["name"] + "-x1y2z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": "ml",
            "uid": f"uid-{pod_name}",
            "labels": labels,
            "ownerReferences": controller_ref(
                "Job", job["metadata"]["name"], job["metadata"].get("uid", "")
            )
            if controller is None
            else controller,
        },
        "spec": {
            "containers": copy.deepcopy(
                job["spec"]["template"]["spec"]["containers"] if containers is None else containers
            )
        },
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Running",
            "containerStatuses": [{"name": c.VALIDATOR_CONTAINER, "state": state}],
        },
    }


def observed_job(
    job: dict[str, Any],
    *,
    created: str = "2026-11-22T10:00:00Z",
    failed: str | None = None,
    complete: bool = False,
) -> dict[str, Any]:
    """A Job as the API server returns it after creation (a UID of its name), optionally
    finished."""
    body = copy.deepcopy(job)
    body["metadata"]["creationTimestamp"] = created
    body["metadata"].setdefault("uid", "uid-" + body["metadata"]["name"])
    conditions = []
    if failed:
        reason, _, message = failed.partition(": ")
        conditions.append(
            {"type": "Failed", "status": "True", "reason": reason, "message": message}
        )
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    body["status"] = {"conditions": conditions, "failed": 1 if failed else 0}
    return body


def summary(verdict: str = "Deterministic", **fields: Any) -> str:
    data = {
        "schemaVersion": 1,
        "verdict": verdict,
        "reason": fields.pop("reason", "all suites gave one output"),
        "fingerprint": fields.pop("fingerprint", FINGERPRINT),
        "suites": fields.pop(
            "suites",
            [
                {
                    "name": "Single",
                    "samples": 16,
                    "uniqueOutputs": 1,
                    "passed": True,
                    "outcome": "Passed",
                    "tokensCompared": 1024,
                    "logprobsCompared": 1024,
                }
            ],
        ),
        "comparedOn": "tokenIds+logprobs",
        "tokensCompared": fields.pop("tokensCompared", 1152),
        "logprobsCompared": 1152,
        "durationSeconds": 12.5,
        "tokensUsed": 4096,
        "latencyP50Milliseconds": 120.4,
        "latencyP95Milliseconds": 250.0,
        "tokensPerSecond": 812.0,
        **fields,
    }
    return json.dumps(data)


def failing_summary(why: str, unique_outputs: int = 3) -> str:
    """A NotDeterministic summary whose Single suite saw `unique_outputs` outputs."""
    return summary(
        "NotDeterministic",
        reason=why,
        fingerprint=None,
        suites=[
            {
                "name": "Single",
                "samples": 16,
                "uniqueOutputs": unique_outputs,
                "passed": False,
                "firstDivergence": why,
                "outcome": "Failed",
                "tokensCompared": 1024,
                "logprobsCompared": 1024,
            }
        ],
    )


def overhead_summary(workload: dict[str, Any], measured: bool = True, percent: float = 25.0) -> str:
    """A benchmark Job's termination message for `workload` (the spec's): the deterministic pods
    `percent` slower than the baseline at concurrency 2, or no measurement."""
    side = {
        "ttft_p50_ms": 5.0, "ttft_p95_ms": 6.0, "itl_p50_ms": 1.0, "itl_p95_ms": 2.0,
        "e2e_p50_ms": 100.0, "e2e_p95_ms": 120.0, "tokens_per_second": 80.0,
        "tokens_per_second_spread": 3.0,
    }  # fmt: skip
    base = dict(side, tokens_per_second=100.0, e2e_p50_ms=80.0)
    parsed = OverheadWorkload.model_validate(workload)
    if not measured:
        return OverheadSummary(
            measured=False, reason="baseline: connection refused", workload=parsed
        ).to_termination_message()
    level = LevelResult(
        concurrency=2,
        deterministic=SideFigures(**side),
        baseline=SideFigures(**base),
        throughput_overhead_percent=percent,
        e2e_p50_overhead_percent=25.0,
        ttft_p50_overhead_percent=0.0,
        itl_p50_overhead_percent=0.0,
    )
    return OverheadSummary(
        measured=True,
        workload=parsed,
        levels=[level],
        headline_percent=percent,
        headline_concurrency=2,
        duration_seconds=3.2,
        tokens_generated=32,
    ).to_termination_message()
