"""The overhead measurement's whole life on the local cluster, with real reference engines.

The reference example with spec.overhead on and a tiny workload: the revision becomes Ready
through a real validation, then the operator starts the baseline (the reference engine in its
default mode, run by the pod runner), the benchmark Job runs the real `detinfer bench` against
a validated pod and the baseline, the operator writes status.overhead from its termination
message and deletes both. Meanwhile the baseline pod is never selected by either Service (their
selectors, as stored, are evaluated against the pods throughout).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.e2e.test_flow import EXAMPLE, FLOW_TIMEOUT, NAME, _logs, _wait_ready
from tests.support.chart import InstalledOperator as Operator
from tests.support.cluster import Cluster, wait_for

WORKLOAD = {"concurrency": [2], "requests": 3, "inputTokens": 16, "outputTokens": 8, "rounds": 2}


def _selected(cluster: Cluster, namespace: str, service: str) -> set[str]:
    """The pods the Service's selector, as the API server stores it, selects now: what the
    endpoints controller would put behind it (this cluster runs none)."""
    selector = cluster.get("service", namespace, service)["spec"]["selector"]
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=query).items
    return {p.metadata.name for p in pods}


def test_the_baseline_is_created_measured_deleted_and_never_in_a_service(
    cluster: Cluster, operator: Operator, namespace: str, pod_runner
):
    spec: dict[str, Any] = copy.deepcopy(EXAMPLE)
    spec["spec"]["replicas"] = 1
    spec["spec"]["overhead"] = {"enabled": True, "workload": WORKLOAD}
    cluster.apply(namespace, spec)
    started = time.monotonic()
    _wait_ready(cluster, namespace, pod_runner)
    ready_after = time.monotonic() - started

    seen: dict[str, Any] = {"baseline": False, "pods": set(), "behind": set(), "jobs": set()}

    def measured() -> dict[str, Any] | None:
        deployments = cluster.get("deployments", namespace)["items"]
        if any(d["metadata"]["name"] == f"{NAME}-baseline" for d in deployments):
            seen["baseline"] = True
        for pod in cluster.pods(namespace, "baseline", NAME):
            seen["pods"].add(pod.metadata.name)
        for job in cluster.jobs(namespace, NAME):
            labels = job.spec.template.metadata.labels or {}
            if labels.get("app.kubernetes.io/component") == "overhead-bench":
                seen["jobs"].add(job.metadata.name)
        for service in (NAME, f"{NAME}-pods"):
            seen["behind"] |= _selected(cluster, namespace, service)
        # Ready never waits on the measurement, and stays True while it runs.
        ready = cluster.condition(namespace, NAME, "Ready") or {}
        assert ready.get("status") == "True", f"{ready}\n{_logs(pod_runner)}"
        overhead = cluster.dis(namespace, NAME)["status"].get("overhead")
        return overhead if overhead else None

    overhead = wait_for("status.overhead", measured, timeout=FLOW_TIMEOUT, interval=0.5)
    took = time.monotonic() - started
    status = cluster.dis(namespace, NAME)["status"]
    assert overhead["measured"] is True, f"{overhead}\n{_logs(pod_runner)}"
    assert overhead["revision"] == status["revision"]
    (level,) = overhead["levels"]
    assert level["concurrency"] == 2
    for side in ("deterministic", "baseline"):
        assert level[side]["tokensPerSecond"] > 0 and level[side]["e2eP50Ms"] > 0
    assert overhead["headlineConcurrency"] == 2
    assert isinstance(overhead["headlinePercent"], float | int)
    engine = cluster.pods(namespace, "engine", NAME)
    assert overhead["deterministicPod"] in {p.metadata.name for p in engine}
    assert overhead["baselinePod"].startswith(f"{NAME}-baseline-")

    # Its whole life: created, ran, in no Service.
    assert seen["baseline"] and seen["pods"] and seen["jobs"], seen
    assert overhead["baselinePod"] in seen["pods"]
    assert {p.metadata.name for p in engine} <= seen["behind"]  # the check can say yes
    assert not seen["pods"] & seen["behind"], seen

    # Then deleted: the baseline Deployment and its pod, and the benchmark Job.
    def left() -> list[str]:
        """What is left of the measurement's objects (none once both are deleted)."""
        deployments = [
            d["metadata"]["name"]
            for d in cluster.get("deployments", namespace)["items"]
            if d["metadata"]["name"] == f"{NAME}-baseline"
        ]
        pods = [
            p.metadata.name
            for p in cluster.pods(namespace, "baseline", NAME)
            if not p.metadata.deletion_timestamp
        ]
        jobs = [
            j.metadata.name
            for j in cluster.jobs(namespace, NAME)
            if j.metadata.name in seen["jobs"]
        ]
        return deployments + pods + jobs

    try:
        wait_for("the baseline and the benchmark Job deleted", lambda: not left(), timeout=60)
    except AssertionError:
        raise AssertionError(f"still there: {left()}\n{_logs(pod_runner)}") from None

    # Users see it: kubectl get dis (the Overhead column), Events, the operator's metrics.
    table = cluster.kubectl("get", "dis", NAME, "-n", namespace).stdout
    assert "OVERHEAD" in table.splitlines()[0], table
    reasons = [e["reason"] for e in cluster.get("events", namespace)["items"]]
    for reason in ("OverheadBaselineStarted", "OverheadMeasurementStarted", "OverheadMeasured"):
        assert reason in reasons, reasons

    def exported() -> str | None:
        text = operator.metrics()
        key = f'namespace="{namespace}"'
        lines = [line for line in text.splitlines() if key in line]
        wanted = ("detinfer_overhead_throughput_percent", "detinfer_overhead_tokens_per_second")
        return text if all(any(w in line for line in lines) for w in wanted) else None

    text = wait_for("the overhead metrics", exported, timeout=30)
    assert f'detinfer_overhead_measured{{name="{NAME}",namespace="{namespace}"}} 1.0' in text
    print(
        f"\nReady after {ready_after:.0f} s, measured after {took:.0f} s: "
        f"headline {overhead['headlinePercent']}% at concurrency 2 "
        f"(deterministic {level['deterministic']['tokensPerSecond']:.1f} tok/s, "
        f"baseline {level['baseline']['tokensPerSecond']:.1f} tok/s)"
    )
