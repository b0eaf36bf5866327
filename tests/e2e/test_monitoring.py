"""The chart's monitoring against the real things: the monitoring.coreos.com CRDs on the local API
server, and a real Prometheus server that scrapes the operator and the engine pods as the chart's
ServiceMonitor and PodMonitor describe, evaluates the chart's PrometheusRule, and answers the
dashboard's queries.

Two DeterministicInferenceServices run side by side from the start of the module: `good`
(deterministic, two replicas) and `bad` (the reference engine in default mode:
deterministicInference Disabled, so its outputs depend on the batch). The rules are rendered with
short `for` durations (values below); the startup-time alerts (could not validate, replicas not
validated) keep their defaults, longer than this test, so "fires nothing" is about the verdicts.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.chart.test_chart import KUBE_VERSION
from tests.e2e.conftest import DRIFT_AFTER, DRIFTING
from tests.support.chart import InstalledOperator
from tests.support.cluster import ROOT, Cluster, free_port, wait_for
from tests.support.prometheus import (
    PodMonitorDiscovery,
    Prometheus,
    service_monitor_job,
)

HELM = Path(
    os.environ.get("HELM", Path.home() / ".cache" / "detinfer" / "bin" / "current" / "helm")
)
CHART = ROOT / "charts" / "detinfer"
RELEASE, RELEASE_NAMESPACE = "detinfer", "detinfer-system"
SCRAPE_SECONDS = 1
EVALUATION_SECONDS = 1
FOR_SECONDS = 5
# Rules with short `for`s; the startup-time ones stay at their defaults (30m, 1h).
RULE_VALUES = {
    "notDeterministicFor": f"{FOR_SECONDS}s",
    "fingerprintMismatchFor": f"{FOR_SECONDS}s",
    "serverMismatchFor": f"{FOR_SECONDS}s",
    "validationStaleFor": f"{FOR_SECONDS}s",
    "validationStaleGraceSeconds": "0",
    "operatorDownFor": f"{FOR_SECONDS}s",
    "reconcileErrorsFor": f"{FOR_SECONDS}s",
}
MONITORING_ON = [
    "--set",
    "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,"
    "monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true,"
    + ",".join(f"monitoring.prometheusRule.{k}={v}" for k, v in RULE_VALUES.items())
    + f",monitoring.serviceMonitor.interval={SCRAPE_SECONDS}s"
    + f",monitoring.podMonitor.interval={SCRAPE_SECONDS}s",
]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "reference.yaml").read_text())
TIMEOUT = 300


def helm_template(*args: str, release: str = RELEASE) -> str:
    result = subprocess.run(
        [
            str(HELM),
            "template",
            release,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm_template(*args)) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# ---- the monitoring.coreos.com CRDs on the real API server


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Cluster) -> Path:
    """The Prometheus Operator's CRDs, pinned (hack/versions.env), installed in the cluster."""
    folder = subprocess.run(
        [str(ROOT / "hack" / "get-monitoring-crds.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.strip()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", folder)
    for plural in ("servicemonitors", "podmonitors", "prometheusrules"):
        # `kubectl wait` fails at once while a new CRD has no conditions yet.
        wait_for(
            f"{plural}.monitoring.coreos.com Established",
            lambda plural=plural: (
                cluster.kubectl(
                    "wait",
                    "--for=condition=Established",
                    "--timeout=10s",
                    f"crd/{plural}.monitoring.coreos.com",
                    check=False,
                ).returncode
                == 0
            ),
            timeout=60,
            interval=0.5,
        )
    cluster.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    return Path(folder)


def test_the_api_server_accepts_the_chart_with_monitoring_on(
    cluster: Cluster, monitoring_crds: Path
):
    # Another release name: the session's operator is installed as RELEASE, and a dry run over
    # its objects would merge this rendering's ports into theirs.
    manifest = helm_template(*MONITORING_ON, release="monitoring-check")
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", RELEASE_NAMESPACE, "-f", "-", stdin=manifest
    )
    for kind in ("servicemonitor", "podmonitor", "prometheusrule"):
        assert f"{kind}.monitoring.coreos.com/" in result.stdout, result.stdout
    # The schemas are the real ones: a field the Prometheus Operator does not know is refused.
    monitor = of_kind(rendered(*MONITORING_ON), "PodMonitor")[0]
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "every minute"
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken), check=False
    )
    assert refused.returncode != 0
    assert "spec.podMetricsEndpoints[0].interval" in refused.stderr, refused.stderr


# ---- a real Prometheus


@pytest.fixture(scope="module")
def dis_namespace(cluster: Cluster, operator: InstalledOperator, pod_runner: Path) -> Iterator[str]:
    """The two resources, applied once for the whole module."""
    name = f"mon-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    good = copy.deepcopy(EXAMPLE)
    good["metadata"]["name"] = "good"
    bad = copy.deepcopy(EXAMPLE)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["replicas"] = 1
    bad["spec"]["engine"]["deterministicInference"] = "Disabled"
    cluster.apply(name, good)
    cluster.apply(name, bad)
    yield name
    cluster.kubectl("delete", "dis", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def prometheus(
    cluster: Cluster,
    operator: InstalledOperator,
    dis_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    docs = rendered(*MONITORING_ON)
    service = next(
        s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-metrics"
    )
    (service_monitor,) = of_kind(docs, "ServiceMonitor")
    (pod_monitor,) = of_kind(docs, "PodMonitor")
    (rule,) = of_kind(docs, "PrometheusRule")
    interval = f"{SCRAPE_SECONDS}s"
    assert service_monitor["spec"]["endpoints"][0]["interval"] == interval
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] == interval
    folder = tmp_path_factory.mktemp("prometheus")
    discovery = PodMonitorDiscovery(pod_monitor, cluster.core, folder / "engines.json")
    discovery.start()
    config = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": f"{EVALUATION_SECONDS}s",
        },
        "scrape_configs": [
            service_monitor_job(service_monitor, service, operator_target(operator), interval),
            discovery.job(interval),
        ],
    }
    server = Prometheus(folder, free_port(), config, {"groups": rule["spec"]["groups"]})
    server.start()
    wait_for("prometheus ready", server.ready, timeout=60)
    yield server
    server.stop()
    discovery.stop()
    print(f"\nprometheus log: {server.log_path}")


def operator_target(operator: InstalledOperator) -> str:
    """The operator's metrics address: its pod's IP (the pod runner binds it there)."""
    pod = operator.pod()
    assert pod is not None and pod.status.pod_ip, "no operator pod with an IP"
    return f"{pod.status.pod_ip}:{operator.metrics_port}"


def condition(cluster: Cluster, ns: str, name: str, type_: str) -> dict[str, Any]:
    return cluster.condition(ns, name, type_) or {}


def firing(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["state"] == "firing"]


def test_prometheus_scrapes_the_operator_and_the_engine_pods(
    prometheus: Prometheus, dis_namespace: str
):
    up = wait_for(
        "the operator's target up",
        lambda: prometheus.query(f'up{{job="{RELEASE}-metrics"}} == 1'),
        timeout=60,
    )
    assert up[0]["metric"]["namespace"] == RELEASE_NAMESPACE
    engine_job = f"{RELEASE_NAMESPACE}/{RELEASE}-engines"

    def engines_up():
        result = prometheus.query(f'up{{job="{engine_job}", namespace="{dis_namespace}"}} == 1')
        return result if len(result) == 3 else None

    targets = wait_for("three engine targets up", engines_up, timeout=TIMEOUT, interval=1)
    by_instance = sorted(t["metric"]["app_kubernetes_io_instance"] for t in targets)
    assert by_instance == ["bad", "good", "good"]
    assert all(t["metric"]["detinfer_io_revision"] for t in targets)
    assert all(t["metric"]["instance"].startswith("127.") for t in targets)  # loopback pod IPs
    # The per-DIS series keep the DIS's namespace (honorLabels), the engines' carry the DIS.
    wait_for(
        "the operator's series of both resources",
        lambda: (
            len(
                prometheus.query(
                    f'detinfer_replicas{{namespace="{dis_namespace}", state="desired"}}'
                )
            )
            == 2
        ),
        timeout=60,
    )
    assert prometheus.query(
        f'sglang:num_running_reqs{{namespace="{dis_namespace}", app_kubernetes_io_instance="good"}}'
    )


def test_outputs_not_deterministic_fires_within_for_plus_a_scrape(
    cluster: Cluster, prometheus: Prometheus, dis_namespace: str
):
    validated = wait_for(
        "bad: Validated False",
        lambda: (
            (c := condition(cluster, dis_namespace, "bad", "Validated")).get("status") == "False"
            and c
        ),
        timeout=TIMEOUT,
        interval=0.5,
    )
    assert validated["reason"] == "NotDeterministic"
    written = datetime.fromisoformat(validated["lastTransitionTime"]).timestamp()
    series = 'ALERTS{alertname="DetinferOutputsNotDeterministic", alertstate="firing", name="bad"}'
    samples = wait_for(
        "DetinferOutputsNotDeterministic firing",
        lambda: prometheus.api("query", query=f"{series}[10m]")["result"],
        timeout=60,
        interval=0.5,
    )
    fired = float(samples[0]["values"][0][0])
    # Seen at the next scrape, pending at the next evaluation, firing `for` later; the
    # condition's time is truncated to the second.
    bound = FOR_SECONDS + SCRAPE_SECONDS + 2 * EVALUATION_SECONDS + 1
    print(f"\nDetinferOutputsNotDeterministic fired {fired - written:.1f} s after the status")
    assert FOR_SECONDS <= fired - written <= bound, (fired - written, bound)
    # One alert per suite that gave more than one output.
    alerts = [
        a
        for a in firing(prometheus)
        if a["labels"]["alertname"] == "DetinferOutputsNotDeterministic"
    ]
    assert alerts and {a["labels"]["name"] for a in alerts} == {"bad"}
    alert = alerts[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["namespace"] == dis_namespace
    assert alert["labels"]["suite"]
    assert float(alert["value"]) > 1  # distinct outputs
    assert alert["annotations"]["runbook_url"].endswith("#detinferoutputsnotdeterministic")


def test_a_deterministic_resource_fires_nothing(
    cluster: Cluster, prometheus: Prometheus, dis_namespace: str
):
    wait_for(
        "good: Ready",
        lambda: condition(cluster, dis_namespace, "good", "Ready").get("status") == "True",
        timeout=TIMEOUT,
        interval=1,
    )
    # Long enough for any short-`for` alert to have fired since.
    time.sleep(FOR_SECONDS + SCRAPE_SECONDS + 2 * EVALUATION_SECONDS)
    ever = prometheus.query(
        f'max_over_time(ALERTS{{alertstate="firing", name="good", namespace="{dis_namespace}"}}[1h])'
    )
    assert ever == [], [a["metric"] for a in ever]
    # Nothing else fires either: the operator is up and reconciles; only `bad` is not deterministic.
    names = {(a["labels"]["alertname"], a["labels"].get("name")) for a in firing(prometheus)}
    assert names == {("DetinferOutputsNotDeterministic", "bad")}, names
    assert prometheus.query(
        f'detinfer_revalidation_interval_seconds{{namespace="{dis_namespace}", name="good"}} == 3600'
    )
    reason = prometheus.query(
        f'detinfer_condition_reason{{namespace="{dis_namespace}", name="good", type="Validated"}}'
    )
    assert [r["metric"]["reason"] for r in reason] == ["Deterministic"]


def test_a_pod_killed_and_replaced_is_seen_in_the_replica_metrics(
    cluster: Cluster, prometheus: Prometheus, dis_namespace: str
):
    wait_for(
        "good: 2 validated replicas scraped",
        lambda: prometheus.query(
            f'detinfer_replicas{{namespace="{dis_namespace}", name="good", state="validated"}} == 2'
        ),
        timeout=TIMEOUT,
        interval=1,
    )
    # The overhead measurement (examples/reference.yaml enables it) benchmarks one of these pods:
    # let it finish first, or the kill below can end it with could-not-measure, and the
    # dashboard's overhead panels (the last test) stay empty for the hour until the next try.
    measured = wait_for(
        "good: status.overhead written",
        lambda: cluster.dis(dis_namespace, "good").get("status", {}).get("overhead"),
        timeout=TIMEOUT,
        interval=1,
    )
    assert measured["measured"] is True, measured
    victim = cluster.pods(dis_namespace, "engine", "good")[0].metadata.name
    cluster.kubectl("delete", "pod", "-n", dis_namespace, victim, "--wait=false")
    selector = f'namespace="{dis_namespace}", name="good"'
    wait_for(
        "fewer validated replicas seen",
        lambda: prometheus.query(f'detinfer_replicas{{{selector}, state="validated"}} < 2'),
        timeout=60,
        interval=0.5,
    )

    def replaced() -> list[dict[str, Any]] | None:
        back = prometheus.query(f'detinfer_replicas{{{selector}, state="validated"}} == 2')
        pods = prometheus.query(
            f'up{{namespace="{dis_namespace}", app_kubernetes_io_instance="good"}} == 1'
        )
        names = {p["metric"]["pod"] for p in pods}
        return pods if back and len(names) == 2 and victim not in names else None

    pods = wait_for("the new pod validated and scraped", replaced, timeout=TIMEOUT, interval=1)
    assert victim not in {p["metric"]["pod"] for p in pods}
    # Prometheus saw the dip, and the running count never went above desired.
    dip = prometheus.query(
        f'min_over_time(detinfer_replicas{{{selector}, state="validated"}}[10m])'
    )
    assert dip and float(dip[0]["value"][1]) < 2
    # The replacement fires no alert of its own (the `for`s of the replica alerts are longer).
    assert not [a for a in firing(prometheus) if a["labels"].get("name") == "good"]


# ---- the dashboard's queries

GRAFANA_RANGE = "10m"


def test_every_dashboard_panel_returns_data(prometheus: Prometheus, dis_namespace: str):
    (config_map,) = [
        d for d in of_kind(rendered(*MONITORING_ON), "ConfigMap") if "detinfer.json" in d["data"]
    ]
    dashboard = json.loads(config_map["data"]["detinfer.json"])
    variables = {
        "$namespace": dis_namespace,
        "$name": "good|bad",
        "$__rate_interval": "1m",
        "$__range": GRAFANA_RANGE,
    }
    empty = []
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in variables.items():
                expr = expr.replace(variable, value)
            checked += 1
            if not prometheus.query(expr):
                empty.append(f"{panel['title']} ({target['refId']}): {expr}")
    assert checked >= 16
    assert empty == [], "panels without data:\n" + "\n".join(empty)


# ---- drift after Ready: the engine changes behind its pod spec, the revalidation catches it


def test_drift_after_ready_is_caught_by_the_recorded_fingerprint_and_fires_the_alert(
    cluster: Cluster, prometheus: Prometheus, dis_namespace: str
):
    """The pod runner (the node) runs `drifting`'s engine with `--planted-fault
    drift=DRIFT_AFTER` (tests/e2e/conftest.py): after that many requests every step adds in
    another order, as an autotuner that switches kernels does. The first validation passes and
    records the fingerprint; traffic then takes the engine past the drift; the periodic
    revalidation, held to the recorded fingerprint, must take the resource to Degraded and fire
    DetinferFingerprintMismatch. Last in the module: its alert would be one more firing."""
    ns = f"drift-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    drifting = copy.deepcopy(EXAMPLE)
    drifting["metadata"]["name"] = DRIFTING
    drifting["spec"]["replicas"] = 1
    drifting["spec"].pop("overhead", None)
    drifting["spec"]["validation"] = {
        "suites": ["Single"],
        "trials": 4,
        "maxNewTokens": 16,
        "revalidateEverySeconds": 60,
        "timeoutSeconds": 600,
    }
    wait_for(
        f"the default ServiceAccount in {ns}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
    )
    cluster.apply(ns, drifting)
    try:
        wait_for(
            "drifting: Ready",
            lambda: condition(cluster, ns, DRIFTING, "Ready").get("status") == "True",
            timeout=TIMEOUT,
            interval=1,
        )
        recorded = cluster.dis(ns, DRIFTING)["status"]["fingerprint"]
        assert recorded, "the first validation records the fingerprint"
        (pod,) = cluster.pods(ns, "engine", DRIFTING)
        # The engine's users: DRIFT_AFTER one-token requests in batches its queue admits.
        url = f"http://{pod.status.pod_ip}:30000/generate"
        probe = {
            "input_ids": [5, 6, 7],
            "sampling_params": {"max_new_tokens": 4, "temperature": 0},
            "return_logprob": True,
        }

        def logprobs() -> list[float]:
            answer = httpx.post(url, json=probe, timeout=60).json()
            return [lp for lp, _, _ in answer["meta_info"]["output_token_logprobs"]]

        before = logprobs()
        body = {"input_ids": [[1, 2, 3]] * 250, "sampling_params": {"max_new_tokens": 1}}
        for _ in range(DRIFT_AFTER // 250):
            assert httpx.post(url, json=body, timeout=120).status_code == 200
        # The drift is real: the engine now computes the same request otherwise.
        assert logprobs() != before
        degraded = wait_for(
            "drifting: Degraded",
            lambda: (
                (c := condition(cluster, ns, DRIFTING, "Degraded")).get("status") == "True" and c
            ),
            timeout=TIMEOUT,
            interval=1,
        )
        assert degraded["reason"] == "FingerprintMismatch", degraded
        assert recorded.removeprefix("sha256:")[:12] in degraded["message"], degraded
        assert condition(cluster, ns, DRIFTING, "Validated")["reason"] == "FingerprintMismatch"
        series = (
            f'ALERTS{{alertname="DetinferFingerprintMismatch", alertstate="firing", '
            f'namespace="{ns}", name="{DRIFTING}"}}'
        )
        wait_for(
            "DetinferFingerprintMismatch firing",
            lambda: prometheus.query(series),
            timeout=60,
            interval=0.5,
        )
    finally:
        cluster.kubectl("delete", "dis", "--all", "-n", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
