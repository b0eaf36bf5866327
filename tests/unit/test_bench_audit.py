"""The operator bench's audit-log figures (bench/audit.py) and its targets (bench/operator.py),
on a small synthetic audit log."""

from __future__ import annotations

import json

import pytest

from bench import audit
from bench.operator import STATUS_PATCH, VERDICT_STEPS, targets, verdict_path
from detinfer.percentile import percentile

NS = "bench-100"


def entry(
    verb: str,
    resource: str,
    name: str,
    received: str,
    done: str,
    agent: str = "kube-controller-manager/v1.31",
    stage: str = "ResponseComplete",
    subresource: str | None = None,
    code: int = 200,
    namespace: str = NS,
) -> dict:
    ref = {"resource": resource, "namespace": namespace, "name": name}
    if subresource:
        ref["subresource"] = subresource
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "stage": stage,
        "verb": verb,
        "userAgent": agent,
        "objectRef": ref,
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": f"2026-12-02T06:00:{received}Z",
        "stageTimestamp": f"2026-12-02T06:00:{done}Z",
    }


OP = "detinfer/0.1"
LOG = [
    entry("create", "deterministicinferenceservices", "s0000", "00.000000", "00.010000", "bench"),
    entry("create", "deterministicinferenceservices", "s0001", "00.020000", "00.050000", "bench"),
    # A watch lasts as long as it is open: never a latency.
    entry("watch", "pods", "", "00.000000", "30.000000", OP),
    # Only the complete stage counts (ResponseStarted precedes it for long answers).
    entry("get", "pods", "x", "00.100000", "00.100500", stage="ResponseStarted"),
    entry("patch", "deployments", "s0000", "00.510000", "00.530000", OP),
    entry("patch", "services", "s0000-engine", "00.540000", "00.545000", OP),
    entry(
        "patch",
        "deterministicinferenceservices",
        "s0000",
        "00.550000",
        "00.600000",
        OP,
        subresource="status",
    ),
    entry("create", "events", "s0000.0123abcd", "00.610000", "00.612000", "kopf/1.37"),
    entry("patch", "deployments", "s0001", "01.050000", "01.150000", OP),
    # Not about a benchmark resource, nor in its namespace: no path; still an API request.
    entry("patch", "deployments", "other", "01.200000", "01.201000", OP),
    entry("patch", "deployments", "s0001", "01.300000", "01.301000", OP, namespace="elsewhere"),
    # Received after the window: not part of the run.
    entry("get", "pods", "late", "09.000000", "09.500000"),
]


def at(seconds: float) -> float:
    return audit.seconds("2026-12-02T06:00:00.000000Z") + seconds


def test_latencies_are_the_servers_own_time_of_completed_non_watch_requests_in_the_window():
    got = sorted(audit.latencies(LOG, at(0), at(2)))
    want = sorted([0.010, 0.030, 0.020, 0.005, 0.050, 0.002, 0.100, 0.001, 0.001])
    assert got == pytest.approx(want, abs=1e-6)
    assert percentile(got, 50) == pytest.approx(0.010, abs=1e-6)
    assert percentile(got, 99) == pytest.approx(0.100, abs=1e-6)
    operator_only = audit.latencies((e for e in LOG if audit.is_operator(e)), at(0), at(2))
    assert len(operator_only) == 7  # the four of s0000, s0001, other, elsewhere


def test_percentile_is_nearest_rank_the_same_as_the_validators():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0  # rank ceil(0.5 * 100) = 50, one-based
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(reversed(values), 1) == 1.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0  # ceil(3.8) = 4
    assert percentile([1.0, 2.0, 3.0, 4.0], 75) == 3.0  # ceil(3.0) = 3
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q=101"):
        percentile(values, 101)


def test_operator_paths_follow_each_resource_in_the_order_received():
    paths = audit.operator_paths(LOG, NS, {"s0000", "s0001"})
    assert [step for _, _, step in paths["s0000"]] == [
        "patch deployments",
        "patch services",
        "patch deterministicinferenceservices/status",
        "create events",
    ]
    assert [step for _, _, step in paths["s0001"]] == ["patch deployments"]
    assert paths["s0000"][0][0] == pytest.approx(at(0.51))
    orders = audit.write_orders(paths)
    assert orders[("patch deployments",)] == 1 and sum(orders.values()) == 2


def test_creations_take_the_completed_successful_creates_in_the_namespace():
    failed = entry(
        "create", "deterministicinferenceservices", "s0002", "00.0", "00.1", "bench", code=409
    )
    created = audit.creations([*LOG, failed], NS, "deterministicinferenceservices")
    assert created == {"s0000": pytest.approx(at(0.01)), "s0001": pytest.approx(at(0.05))}


def test_read_parses_one_entry_per_line(tmp_path):
    path = tmp_path / "audit.log"
    path.write_text("\n".join(json.dumps(e) for e in LOG[:3]) + "\n\n")
    assert list(audit.read(path)) == LOG[:3]


def row(size: int, **over: float) -> dict:
    base = {
        "size": size,
        "create_p99": 0.5,
        "api_p99": 0.2,
        "ready_p99": 1.0,
        "rss_peak_mib": 200.0,
        "idle_writes_per_min": 0.0,
    }
    return {**base, **over}


def test_targets_compare_create_with_three_times_the_api_servers_p99_of_the_same_run():
    checks = {t: ok for t, _, ok in targets([row(100), row(1000, create_p99=0.61)])}
    assert checks["create→Deployment p99 ≤ 3x API server p99 at 100"] is True
    assert checks["create→Deployment p99 ≤ 3x API server p99 at 1000"] is False
    assert checks["summary→Ready p99 < 2 s at 1000"] is True
    assert checks["operator RSS < 300 MiB at 1000"] is True
    assert checks["no writes while nothing changes at 100"] is True
    # Ready and RSS have targets at 1000 only.
    assert not any(t.endswith(" at 100") and ("Ready" in t or "RSS" in t) for t in checks)


def test_targets_fail_on_any_idle_write_slow_ready_or_large_rss():
    checks = {
        t: ok
        for t, _, ok in targets(
            [row(1000, ready_p99=2.0, rss_peak_mib=300.0, idle_writes_per_min=0.5)]
        )
    }
    assert checks["create→Deployment p99 ≤ 3x API server p99 at 1000"] is True
    assert checks["summary→Ready p99 < 2 s at 1000"] is False
    assert checks["operator RSS < 300 MiB at 1000"] is False
    assert checks["no writes while nothing changes at 1000"] is False


def test_verdict_path_splits_summary_to_ready_at_the_operators_requests():
    """Per resource: summary written -> the first request after it -> the last status patch
    completed before Ready was seen -> seen; the tail is the slowest 1% (here the one of two)."""
    gate, status = "patch pods/status", STATUS_PATCH
    paths = {
        # a status patch before the summary (the validation's start) is not the Ready write
        "a": [(5.0, 5.1, status), (10.2, 10.3, gate), (10.4, 10.6, status)],
        "b": [(20.5, 21.0, gate), (21.5, 22.5, status), (30.0, 30.1, status)],
        "c": [(40.1, 40.2, gate)],  # no Ready write: left out
    }
    written = {"a": 10.0, "b": 20.0, "c": 40.0}
    seen = {"a": 10.7, "b": 23.0, "c": 41.0}
    v = verdict_path(paths, written, seen)
    assert v["n"] == 2 and v["tail_n"] == 1
    first, writes, at_server, to_seen = (v["steps"][label] for label in VERDICT_STEPS)
    assert first["p50"] == pytest.approx(0.2) and first["tail_mean"] == pytest.approx(0.5)
    assert writes["p99"] == pytest.approx(2.0) and writes["tail_mean"] == pytest.approx(2.0)
    assert at_server["tail_mean"] == pytest.approx(1.5)
    assert to_seen["p50"] == pytest.approx(0.1) and to_seen["tail_mean"] == pytest.approx(0.5)
    assert v["tail_total_mean"] == pytest.approx(3.0)
    assert verdict_path({"c": paths["c"]}, written, seen) == {"n": 0}
