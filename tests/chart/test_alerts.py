"""The chart's monitoring objects: the ServiceMonitor and PodMonitor select what the operator and
its builders make, and the PrometheusRule's alerts, as the chart renders them, pass `promtool check
rules` and the unit tests of alerts_test.yaml (every alert firing and not firing), use only metrics
the operator exports, and link to a section of docs/runbooks.md; the Grafana dashboard's ConfigMap
is a valid Kubernetes object and every panel's query parses and reads exported metrics only.

promtool comes from hack/get-promtool.sh (make chart runs it). The monitoring.coreos.com kinds have
no schema offline, so their structure is checked here rather than by kubernetes-validate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from detinfer import metrics
from detinfer.api import constants as c
from detinfer.engine.metrics import EngineMetrics
from tests.chart.test_chart import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    helm,
    kubernetes_validate,
    of_kind,
    render,
)

PROMTOOL = Path(
    os.environ.get("PROMTOOL", Path.home() / ".cache" / "detinfer" / "bin" / "current" / "promtool")
)
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALL_ON = (
    "--set",
    "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,"
    "monitoring.prometheusRule.enabled=true",
)
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module", autouse=True)
def promtool_exists() -> None:
    # A missing promtool fails (never skips): `make chart` fetches it first.
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run hack/get-promtool.sh (make chart does)"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def rule_groups(*args: str) -> list[dict[str, Any]]:
    rules = of_kind(render(*ALL_ON, *args), "PrometheusRule")
    assert len(rules) == 1
    groups: list[dict[str, Any]] = rules[0]["spec"]["groups"]
    return groups


def alerts(*args: str) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(*args) for rule in group["rules"]]


def write_rules(tmp_path: Path, *args: str) -> Path:
    """The rendered spec.groups as a rule file, next to a copy of the unit tests."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(*args)}))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def test_off_by_default():
    kinds = {d["kind"] for d in render()}
    assert not kinds & MONITORING_KINDS
    assert {d["kind"] for d in render(*ALL_ON)} >= MONITORING_KINDS


def test_lint_strict_with_monitoring_on():
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *ALL_ON)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "monitoring.serviceMonitor.interval=30"],
            "at '/monitoring/serviceMonitor/interval'",
        ),
        (["--set", "monitoring.prometheusRule.couldNotValidateFor=1 hour"], "couldNotValidateFor"),
        (["--set", "monitoring.prometheusRule.reconcileErrorRatio=2"], "reconcileErrorRatio"),
        (
            ["--set", "monitoring.prometheusRule.validationStaleGraceSeconds=-1"],
            "validationStaleGraceSeconds",
        ),
        (["--set", "monitoring.podMonitr.enabled=true"], "additional properties 'podMonitr'"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_schema_refuses_bad_monitoring_values(args: list[str], message: str):
    result = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert result.returncode != 0, f"{args} was accepted"
    assert message in result.stderr, result.stderr


def test_labels_from_values_on_every_monitoring_object():
    docs = render(*ALL_ON, "--set", "monitoring.labels.release=kube-prometheus-stack")
    for doc in docs:
        if doc["kind"] in MONITORING_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", doc["kind"]
            assert doc["metadata"]["namespace"] == NAMESPACE
            assert c.LABEL_PART_OF not in doc["metadata"]["labels"]


def test_service_monitor_selects_the_metrics_service():
    docs = render(*ALL_ON)
    monitor = of_kind(docs, "ServiceMonitor")[0]["spec"]
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("metrics"))
    selector = monitor["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The per-DIS series keep their own namespace label (the alerts match on it).
    assert endpoint["honorLabels"] is True


def test_pod_monitor_selects_the_engine_pods():
    monitor = of_kind(render(*ALL_ON), "PodMonitor")[0]["spec"]
    assert monitor["selector"]["matchLabels"] == {
        c.LABEL_PART_OF: c.PART_OF,
        c.LABEL_COMPONENT: c.COMPONENT_ENGINE,
    }
    assert monitor["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] == c.ENGINE_PORT_NAME
    assert endpoint["path"] == "/metrics"
    assert monitor["podTargetLabels"] == [c.LABEL_INSTANCE, c.LABEL_REVISION]


def test_pod_monitor_follows_watch_namespaces():
    docs = render(*ALL_ON, "--set", "watchNamespaces={team-a,team-b}")
    monitor = of_kind(docs, "PodMonitor")[0]["spec"]
    assert monitor["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_promtool_check_rules(tmp_path: Path):
    write_rules(tmp_path)
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests(tmp_path: Path):
    write_rules(tmp_path)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path):
    """The unit tests see the thresholds: a longer grace makes the stale case fire no more."""
    write_rules(tmp_path, "--set", "monitoring.prometheusRule.validationStaleGraceSeconds=20000")
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "DetinferValidationStale" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never seen firing"
    assert names - silent == set(), "alerts never seen silent"
    assert firing | silent <= names


def github_anchor(heading: str) -> str:
    """How GitHub names a heading's anchor: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_is_annotated_and_has_a_runbook_section():
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for alert in alerts("--set", "monitoring.prometheusRule.runbookUrl=https://x.test/r.md"):
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        url = alert["annotations"]["runbook_url"]
        assert url == f"https://x.test/r.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"


def exported_series_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_alerts_use_only_metrics_the_operator_exports():
    exported = exported_series_names()
    assert "detinfer_reconcile_total" in exported  # the counter's exposed name
    for alert in alerts():
        used = set(re.findall(r"\b(detinfer_[a-z0-9_]+)\b", alert["expr"]))
        assert used <= exported, (alert["alert"], used - exported)
        # Every alert reads the operator's series, by the job its ServiceMonitor gives them.
        assert used or "up{" in alert["expr"], alert["alert"]
        assert f'job="{RELEASE}-metrics"' in alert["expr"], alert["alert"]


# ---- the Grafana dashboard

DASHBOARD = CHART / "dashboards" / "detinfer.json"
# Grafana's variables, replaced by what they stand for so that promtool can parse the queries.
GRAFANA_VARIABLES = {"$namespace": ".*", "$name": ".*", "$__rate_interval": "5m", "$__range": "6h"}


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} {target['refId']}", expr))
    return queries


def check_queries(
    tmp_path: Path, queries: list[tuple[str, str]]
) -> subprocess.CompletedProcess[str]:
    """promtool parses each query as a recording rule's expression."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)
    ]
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    return promtool("check", "rules", "queries.yaml", cwd=tmp_path)


def test_dashboard_config_map(tmp_path: Path):
    docs = render("--set", "monitoring.dashboard.enabled=true")
    (config_map,) = [d for d in of_kind(docs, "ConfigMap") if "detinfer.json" in d["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["detinfer.json"]) == json.loads(DASHBOARD.read_text())
    rendered = tmp_path / "configmap.yaml"
    rendered.write_text(yaml.safe_dump(config_map))
    check = kubernetes_validate(rendered)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not of_kind(render(), "ConfigMap")


def test_every_dashboard_query_parses(tmp_path: Path):
    queries = panel_queries()
    assert not [q for q in queries if "$" in q[1]], "a Grafana variable is left unreplaced"
    result = check_queries(tmp_path, queries)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
    # ...and the check can fail.
    assert check_queries(tmp_path, [("broken", "sum by (name (detinfer_replicas)")]).returncode != 0


def test_every_dashboard_query_reads_exported_metrics():
    engine: set[str] = set()
    for family in EngineMetrics("model").registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        engine |= {family.name + s for s in suffixes.get(family.type, [""])}
    exported = exported_series_names() | engine
    for title, expr in panel_queries():
        used = set(re.findall(r"\b((?:detinfer_|sglang:)[a-z0-9_]+)(?=[{[])", expr))
        assert used, title
        assert used <= exported, (title, used - exported)


def test_monitoring_doc_lists_every_metric_and_alert():
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    families = [*metrics.REGISTRY.collect(), *EngineMetrics("model").registry.collect()]
    for family in families:
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{exposed}`" in doc, f"docs/monitoring.md does not list {exposed}"
    for alert in alerts():
        assert f"| {alert['alert']} |" in doc, f"docs/monitoring.md does not list {alert['alert']}"
