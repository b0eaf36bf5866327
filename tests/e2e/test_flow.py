"""The whole flow on one machine: kubectl apply -> engine pods -> a real validation -> Ready.

The reference engine and the validator really run (as local processes on the pods' loopback IPs,
started by the pod runner); nothing here writes a pod's status or a summary by hand.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from tests.support.chart import InstalledOperator as Operator
from tests.support.cluster import CRD_NAME, ROOT, Cluster, wait_for

EXAMPLE = yaml.safe_load((ROOT / "examples" / "reference.yaml").read_text())
NAME = EXAMPLE["metadata"]["name"]
GATE = "detinfer.io/validated"
FLOW_TIMEOUT = 540


def _condition(cluster: Cluster, ns: str, type_: str) -> dict[str, Any]:
    return cluster.condition(ns, NAME, type_) or {}


def _gate(pod: Any) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == GATE), None)


def _pod_ready(pod: Any) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), None)


def _wait_ready(cluster: Cluster, ns: str, pod_logs) -> dict[str, Any]:
    def ready():
        c = _condition(cluster, ns, "Ready")
        if c.get("status") == "True":
            return cluster.dis(ns, NAME)
        degraded = _condition(cluster, ns, "Degraded")
        assert degraded.get("status") != "True", f"Degraded: {degraded}\n{_logs(pod_logs)}"
        return None

    return wait_for(f"{ns}/{NAME} Ready", ready, timeout=FLOW_TIMEOUT, interval=1)


def _logs(pod_logs) -> str:
    parts = []
    for path in sorted(pod_logs.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(parts)


def test_the_chart_installed_the_crd(cluster: Cluster, operator: Operator):
    """The session's cluster had no CRD (tests/e2e/conftest.py): helm installed the chart's
    crds/ copy, byte for byte the generated CRD's spec."""
    crd = json.loads(
        cluster.kubectl("get", "crd", CRD_NAME, "-o", "json", "--show-managed-fields").stdout
    )
    managers = {e["manager"] for e in crd["metadata"].get("managedFields") or []}
    assert "helm" in managers and "kubectl" not in managers, managers
    chart_copy = yaml.safe_load(
        (
            ROOT / "charts" / "detinfer" / "crds" / f"detinfer.io_{CRD_NAME.split('.')[0]}.yaml"
        ).read_text()
    )
    assert crd["spec"]["versions"][0]["schema"] == chart_copy["spec"]["versions"][0]["schema"]


def test_reference_example_becomes_ready_through_a_real_validation(
    cluster: Cluster, operator: Operator, namespace: str, pod_runner
):
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "reference.yaml"))
    dis = _wait_ready(cluster, namespace, pod_runner)
    status = dis["status"]
    assert status["fingerprint"].startswith("sha256:") and len(status["fingerprint"]) == 71
    validation = status["validation"]
    assert validation["verdict"] == "Deterministic"
    assert validation["suites"] and all(
        s["passed"] and s["uniqueOutputs"] == 1 for s in validation["suites"]
    )
    pods = cluster.pods(namespace, "engine", NAME)
    assert len(pods) == 2
    assert all(_gate(p) == "True" and _pod_ready(p) == "True" for p in pods)
    # The validator really ran against both pods: its summary is in the pod runner's folder.
    summaries = [
        json.loads(p.read_text())
        for p in pod_runner.glob(f"{namespace}_*.termination-log")
        if p.read_text().strip()
    ]
    assert any(s["verdict"] == "Deterministic" for s in summaries)
    assert any(s.get("fingerprint") == status["fingerprint"] for s in summaries)

    # The operator's metrics show the validation.
    def metrics_of_namespace() -> str | None:
        text = operator.metrics()
        return text if f'namespace="{namespace}"' in text else None

    metrics = wait_for("validation metrics", metrics_of_namespace)
    lines = [line for line in metrics.splitlines() if f'namespace="{namespace}"' in line]
    assert any(
        line.startswith("detinfer_reproducibility_ratio") and line.endswith(" 1.0")
        for line in lines
    )
    assert any(line.startswith("detinfer_validation_tokens") for line in lines)
    assert any(
        line.startswith("detinfer_validation_runs_total") and 'result="Deterministic"' in line
        for line in lines
    )

    # A replaced pod is validated against the recorded fingerprint before it takes traffic.
    victim = pods[0].metadata.name
    cluster.kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")

    def replaced():
        current = cluster.pods(namespace, "engine", NAME)
        names = {p.metadata.name for p in current if not p.metadata.deletion_timestamp}
        if victim in names or len(names) != 2:
            return None
        new = next(p for p in current if p.metadata.name not in {q.metadata.name for q in pods})
        return new if _gate(new) == "True" else None

    new_pod = wait_for("the new pod validated", replaced, timeout=FLOW_TIMEOUT, interval=1)
    # Ready follows the gate as the kubelet (here the pod runner) sees it: a moment later.
    wait_for(
        "the new pod Ready",
        lambda: (
            _pod_ready(cluster.core.read_namespaced_pod(new_pod.metadata.name, namespace)) == "True"
        ),
        timeout=15,
    )
    jobs = cluster.jobs(namespace, NAME)
    rechecks = [
        j
        for j in jobs
        if new_pod.metadata.name in (j.metadata.annotations or {}).get("detinfer.io/pods", "")
        # The example measures its overhead too: that Job names a pod as well.
        and (j.spec.template.metadata.labels or {}).get("app.kubernetes.io/component")
        == "validator"
    ]
    assert rechecks, "no validation Job for the new pod"
    args = rechecks[0].spec.template.spec.containers[0].args
    assert args[args.index("--expected-fingerprint") + 1] == status["fingerprint"]
    assert cluster.dis(namespace, NAME)["status"]["fingerprint"] == status["fingerprint"]
    # Every pod, Job and child here is the operator's own: nothing was taken for a forgery.
    warnings = [
        e
        for e in cluster.get("events", namespace)["items"]
        if e["reason"] in ("UntrustedObject", "ChildConflict")
    ]
    assert warnings == [], warnings


def test_without_the_determinism_flag_it_ends_degraded_with_the_divergence(
    cluster: Cluster, operator: Operator, namespace: str, pod_runner
):
    spec = copy.deepcopy(EXAMPLE)
    spec["spec"]["engine"]["deterministicInference"] = "Disabled"
    cluster.apply(namespace, spec)

    def degraded():
        c = _condition(cluster, namespace, "Degraded")
        return c if c.get("status") == "True" else None

    condition = wait_for("Degraded", degraded, timeout=FLOW_TIMEOUT, interval=1)
    assert condition["reason"] == "NotDeterministic"
    assert "diverge" in condition["message"].lower() or "token" in condition["message"]
    assert _condition(cluster, namespace, "Ready").get("status") == "False"
    validation = cluster.dis(namespace, NAME)["status"]["validation"]
    assert validation["verdict"] == "NotDeterministic"
    assert any(s["uniqueOutputs"] > 1 for s in validation["suites"])
    pods = cluster.pods(namespace, "engine", NAME)
    assert pods and all(_pod_ready(p) != "True" and _gate(p) != "True" for p in pods)
