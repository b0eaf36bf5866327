"""A real third-party engine through the whole flow: examples/llama-cpp.yaml, kubectl apply ->
a LlamaCpp pod -> llama.cpp's real llama-server (the cached build, run by the pod runner behind
the container's own sha256 check of the GGUF) -> a real validation over llama.cpp's native
protocol -> Ready; and the setting docs/engines.md measured nondeterministic (four slots) ->
Validated=False, Degraded, out of traffic.

The GGUF is the demo's model, written here (random weights from seed 0, llama.cpp's Llama 3
tokenizer) into the folder that stands for the model cache volume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from detinfer.engines.llamacpp import vocab_file
from detinfer.engines.llamacpp.model import write_model
from tests.e2e.test_monitoring import (
    EVALUATION_SECONDS,
    MONITORING_ON,
    RELEASE,
    SCRAPE_SECONDS,
    of_kind,
    operator_target,
    rendered,
)
from tests.support.chart import InstalledOperator as Operator
from tests.support.cluster import ROOT, Cluster, free_port, wait_for
from tests.support.prometheus import Prometheus, service_monitor_job

EXAMPLE = yaml.safe_load((ROOT / "examples" / "llama-cpp.yaml").read_text())
NAME = EXAMPLE["metadata"]["name"]
GATE = "detinfer.io/validated"
TIMEOUT = 540


@pytest.fixture(scope="module")
def model(operator: Operator) -> Path:
    """The example's model in the pod runner's model folder, checked against the example."""
    path = operator.runner.model_dir / Path(EXAMPLE["spec"]["model"]["path"]).name
    if not path.exists():
        write_model(path, vocab_file(), seed=0)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256 == EXAMPLE["spec"]["model"]["sha256"], (
        f"the demo model's sha256 is {sha256}, examples/llama-cpp.yaml pins another: "
        "write the new one into the example"
    )
    return path


@pytest.fixture
def models_claim(cluster: Cluster, namespace: str, model: Path) -> Iterator[str]:
    """The example's cacheVolumeClaim, bound to a hostPath volume of the model folder (the pod
    runner reads the model there; the claim lets the scheduler place the pod, as on a cluster
    whose volume holds the GGUF)."""
    claim = EXAMPLE["spec"]["model"]["cacheVolumeClaim"]
    volume = f"{namespace}-{claim}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "metadata": {"name": volume},
                        "spec": {
                            "capacity": {"storage": "1Gi"},
                            "accessModes": ["ReadOnlyMany"],
                            "storageClassName": "",
                            "hostPath": {"path": str(model.parent)},
                        },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": namespace},
                        "spec": {
                            "accessModes": ["ReadOnlyMany"],
                            "storageClassName": "",
                            "volumeName": volume,
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    },
                ],
            }
        ),
    )
    yield claim
    cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


def _condition(cluster: Cluster, ns: str, name: str, type_: str) -> dict[str, Any]:
    return cluster.condition(ns, name, type_) or {}


def _gate(pod: Any) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == GATE), None)


def _logs(pod_logs: Path, namespace: str) -> str:
    parts = []
    for path in sorted(pod_logs.glob(f"{namespace}_*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(parts)


def _server_of(pod_logs: Path, namespace: str, pod: str) -> list[str]:
    """The command line of the process the pod runner runs for `pod`."""
    pid = (pod_logs / f"{namespace}_{pod}.pid").read_text().strip()
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_the_llama_cpp_example_becomes_ready_on_a_real_llama_server(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    pod_runner: Path,
    model: Path,
    models_claim,
):
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "llama-cpp.yaml"))

    def ready():
        if _condition(cluster, namespace, NAME, "Ready").get("status") == "True":
            return cluster.dis(namespace, NAME)
        degraded = _condition(cluster, namespace, NAME, "Degraded")
        assert degraded.get("status") != "True", (
            f"Degraded: {degraded}\n{_logs(pod_runner, namespace)}"
        )
        return None

    dis = wait_for(f"{namespace}/{NAME} Ready", ready, timeout=TIMEOUT, interval=1)
    validation = dis["status"]["validation"]
    assert validation["verdict"] == "Deterministic", validation
    assert dis["status"]["fingerprint"].startswith("sha256:")
    (pod,) = cluster.pods(namespace, "engine", NAME)
    assert _gate(pod) == "True"
    # The pod's process is the real llama-server (after the sha256 check exec'ed it), on the
    # example's model, with one slot and the prompt cache off.
    server = _server_of(pod_runner, namespace, pod.metadata.name)
    assert Path(server[0]).name == "llama-server" and os.access(server[0], os.X_OK)
    assert server[server.index("--model") + 1] == str(model)
    assert server[server.index("--parallel") + 1] == "1" and "--no-cache-prompt" in server
    # The validation Job spoke llama.cpp's native protocol.
    (job,) = [
        j
        for j in cluster.jobs(namespace, NAME)
        if (j.spec.template.metadata.labels or {}).get("app.kubernetes.io/component") == "validator"
    ]
    args = job.spec.template.spec.containers[0].args
    assert args[args.index("--protocol") + 1] == "llamacpp"


def test_four_slots_end_degraded_out_of_traffic_and_alerting(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    pod_runner: Path,
    model: Path,
    models_claim,
    tmp_path: Path,
):
    """Four slots decode requests together: the validator finds other logprobs in a batch than
    alone (docs/engines.md measured it with llama-server directly), so the pod never serves."""
    spec = copy.deepcopy(EXAMPLE)
    spec["metadata"]["name"] = name = "llama-cpp-slots"
    spec["spec"]["engine"]["slots"] = 4
    cluster.apply(namespace, spec)

    def degraded():
        c = _condition(cluster, namespace, name, "Degraded")
        return c if c.get("status") == "True" else None

    condition = wait_for(f"{name} Degraded", degraded, timeout=TIMEOUT, interval=1)
    print(f"{name}: {condition['message']}")  # the first divergence, for the record
    assert condition["reason"] == "NotDeterministic", condition
    assert _condition(cluster, namespace, name, "Validated").get("status") == "False"
    assert _condition(cluster, namespace, name, "Ready").get("status") == "False"
    validation = cluster.dis(namespace, name)["status"]["validation"]
    assert validation["verdict"] == "NotDeterministic"
    failed = [s for s in validation["suites"] if not s["passed"]]
    assert failed, validation
    (pod,) = cluster.pods(namespace, "engine", name)
    assert _gate(pod) != "True"
    server = _server_of(pod_runner, namespace, pod.metadata.name)
    assert server[server.index("--parallel") + 1] == "4"

    # The chart's alert fires in a real Prometheus that scrapes the operator as the chart's
    # ServiceMonitor says, labelled with the resource's engine kind.
    docs = rendered(*MONITORING_ON)
    service = next(
        s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-metrics"
    )
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (rule,) = of_kind(docs, "PrometheusRule")
    interval = f"{SCRAPE_SECONDS}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": f"{EVALUATION_SECONDS}s"},
        "scrape_configs": [
            service_monitor_job(monitor, service, operator_target(operator), interval)
        ],
    }
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prometheus = Prometheus(folder, free_port(), config, {"groups": rule["spec"]["groups"]})
    prometheus.start()
    try:
        wait_for("prometheus ready", prometheus.ready, timeout=60)

        def alert():
            return [
                a
                for a in prometheus.alerts()
                if a["state"] == "firing"
                and a["labels"]["alertname"] == "DetinferOutputsNotDeterministic"
                and a["labels"].get("name") == name
            ]

        alerts = wait_for("DetinferOutputsNotDeterministic firing", alert, timeout=60)
    finally:
        prometheus.stop()
    assert {a["labels"]["engine_kind"] for a in alerts} == {"LlamaCpp"}
    assert {a["labels"]["namespace"] for a in alerts} == {namespace}
