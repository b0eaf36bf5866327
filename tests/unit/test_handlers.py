"""`sync`: the plan is carried out in order, Events only after the status write, metrics follow."""

from __future__ import annotations

import copy

import kopf
import pytest
from prometheus_client import generate_latest

from detinfer import metrics
from detinfer.config import OperatorConfig
from detinfer.controller import handlers
from detinfer.controller.cluster import Conflict
from detinfer.controller.handlers import State, _freshest, sync
from detinfer.controller.observed import PodView
from tests import factories as f


class FakeCluster:
    """Records writes; a unit test fakes what it does not test (the API server)."""

    def __init__(self, conflict: bool = False):
        self.calls: list[tuple] = []
        self.conflict = conflict

    def apply(self, obj):
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))

    def create_job(self, job):
        self.calls.append(("create_job", job["metadata"]["name"]))
        return True

    def delete_job(self, namespace, name):
        self.calls.append(("delete_job", name))

    def set_pod_condition(self, namespace, pod, condition):
        self.calls.append(("pod", pod, condition["status"]))

    def patch_status(self, namespace, name, status, old_status, resource_version):
        self.calls.append(("status", resource_version))
        if self.conflict:
            raise Conflict("moved on")
        return {
            "metadata": {"resourceVersion": str(int(resource_version) + 1), "generation": 1},
            "status": status,
        }


def _state(cluster):
    events = []
    state = State(cluster, OperatorConfig(), post_event=lambda body, **kw: events.append(kw))
    return state, events


def _indexes(pods=()):
    return {
        "pods_by_owner": {("ml", "qwen"): [PodView.from_body(p) for p in pods]},
        "jobs_by_owner": {},
        "deployments_by_owner": {},
        "services_by_owner": {},
    }


def test_sync_writes_children_then_status_then_events():
    cluster = FakeCluster()
    state, events = _state(cluster)
    body = f.dis(engine={"image": "lmsysorg/sglang:latest"})  # invalid: a Warning Event
    sync(state, ("ml", "qwen"), body, _indexes())
    assert cluster.calls == [("status", "100")]
    assert [e["reason"] for e in events] == ["InvalidSpec"]
    assert state.written[("ml", "qwen")]["metadata"]["resourceVersion"] == "101"

    cluster.calls.clear()
    fixed = f.dis()
    fixed["metadata"]["generation"] = 2  # the user's fix is a new generation
    sync(state, ("ml", "qwen"), fixed, _indexes())
    assert [call[0] for call in cluster.calls] == ["apply", "apply", "apply", "status"]


def test_a_conflict_posts_no_event_and_asks_kopf_to_retry():
    state, events = _state(FakeCluster(conflict=True))
    with pytest.raises(kopf.TemporaryError):
        sync(state, ("ml", "qwen"), f.dis(engine={"image": "x:latest"}), _indexes())
    assert events == []
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_reconcile_total{result="conflict"}' in text


def test_metrics_follow_the_status_and_are_forgotten():
    cluster = FakeCluster()
    state, _ = _state(cluster)
    body = f.dis()
    sync(state, ("ml", "qwen"), body, _indexes())
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_replicas{name="qwen",namespace="ml",state="desired"} 2.0' in text
    assert 'detinfer_condition{name="qwen",namespace="ml",type="Ready"} 0.0' in text
    metrics.observe(
        "ml",
        "qwen",
        {
            "validation": {
                "revision": "r",
                "jobName": "j",
                "verdict": "Deterministic",
                "lastRunTime": "2026-11-22T10:00:00Z",
                "lastSuccessTime": "2026-11-22T10:00:00Z",
                "durationSeconds": 12,
                "tokensUsed": 100,
                "suites": [
                    {"name": "Single", "samples": 4, "uniqueOutputs": 1, "passed": True},
                    {"name": "Prefix", "samples": 4, "uniqueOutputs": 2, "passed": False},
                ],
            },
            "overhead": {"latencyP50Milliseconds": 250, "tokensPerSecond": 90},
        },
        consumed=None,
    )
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_reproducibility_ratio{name="qwen",namespace="ml"} 0.5' in text
    assert (
        'detinfer_validation_unique_outputs{name="qwen",namespace="ml",suite="Prefix"} 2.0' in text
    )
    assert 'detinfer_validation_latency_p50_seconds{name="qwen",namespace="ml"} 0.25' in text
    assert _sample(text, "detinfer_last_successful_validation_timestamp_seconds") == 1795341600.0
    metrics.forget("ml", "qwen")
    assert 'name="qwen"' not in generate_latest(metrics.REGISTRY).decode()


def _sample(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("name") == "qwen":
                return sample.value
    raise AssertionError(f"{name} not exported")


def test_freshest_prefers_our_newer_write_of_the_same_generation():
    indexed = f.dis()
    written = copy.deepcopy(indexed)
    written["metadata"]["resourceVersion"] = "101"
    assert _freshest(indexed, written) is written
    assert _freshest(indexed, None) is indexed
    written["metadata"]["generation"] = 2
    assert _freshest(indexed, written) is indexed
    older = copy.deepcopy(indexed)
    older["metadata"]["resourceVersion"] = "99"
    assert _freshest(indexed, older) is indexed
    opaque = copy.deepcopy(indexed)
    opaque["metadata"]["resourceVersion"] = "abc"
    assert _freshest(indexed, opaque) is indexed


def test_child_events_reach_their_owner_only():
    cluster = FakeCluster()
    state, _ = _state(cluster)
    indexes = _indexes()
    indexes["resources_by_key"] = {("ml", "qwen"): [f.dis()]}
    memo = kopf.Memo(state=state)
    handlers.child_changed(body=f.engine_pod("qwen-a", "r", instance="other"), memo=memo, **indexes)
    assert cluster.calls == []
    handlers.child_changed(body=f.engine_pod("qwen-a", "r"), memo=memo, **indexes)
    assert cluster.calls[-1][0] == "status"
