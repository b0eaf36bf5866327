"""`sync` and the triggers: the plan is carried out in order, Events only after the status write,
metrics follow."""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import socket
import threading
from dataclasses import replace

import kopf
import pytest
from kubernetes import client
from prometheus_client import generate_latest

from detinfer import metrics
from detinfer.api import DeterministicInferenceServiceStatus, SpecError, parse_dis
from detinfer.api import constants as c
from detinfer.builders import RevisionContext, revision_of, validation_job_name
from detinfer.config import OperatorConfig
from detinfer.controller import handlers
from detinfer.controller.cluster import Cluster, Conflict, InTheWay
from detinfer.controller.events import EventPoster
from detinfer.controller.observed import (
    ChildView,
    Controller,
    JobView,
    PodView,
    ReplicaSetView,
    ResourceView,
)
from detinfer.controller.periodic import Periodic
from detinfer.controller.state import State
from detinfer.controller.sync import (
    UNSYNCED_RETRY_SECONDS,
    RetryLater,
    _freshest,
    sync,
    sync_key,
)
from detinfer.controller.watches import ChildWatch, ChildWatches, Indexes, Kind, OwnerIndex
from tests.support import factories as f

OWNED = Controller(c.KIND, "qwen", f.DIS_UID)
POD_KIND = Kind("pods", "Pod", list, list, PodView.from_body)


class FakeCluster:
    """Records writes; a unit test fakes what it does not test (the API server)."""

    def __init__(
        self, conflicts: int = 0, body=None, job_exists: bool = False, foreign=(), jobs=None
    ):
        self.calls: list[tuple] = []
        # name -> Job as the API server holds it (read_job); the ones create_job makes too.
        self.jobs: dict[str, dict] = dict(jobs or {})
        self.events: list[dict] = []
        self.conflicts = conflicts  # how many status writes fail with a conflict
        self.body = body
        self.job_exists = job_exists
        # (kind, name) of objects someone else holds, invisible to the indexes.
        self.foreign = set(foreign)

    def get_dis(self, namespace, name):
        self.calls.append(("get", name))
        return copy.deepcopy(self.body)

    def apply(self, obj, owner_uid, seen=True, created=False):
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        self.created_applies = getattr(self, "created_applies", [])
        if created:
            self.created_applies.append((obj["kind"], obj["metadata"]["name"]))
        if not seen and (obj["kind"], obj["metadata"]["name"]) in self.foreign:
            raise InTheWay(obj["kind"], obj["metadata"]["name"], "uid-foreign", None)

    def create_job(self, job, created):
        name = job["metadata"]["name"]
        self.calls.append(("create_job", name))
        if ("Job", name) in self.foreign:
            raise InTheWay("Job", name, "uid-foreign", None)
        if self.job_exists:
            return created[name], False
        self.job_exists = True
        self.jobs[name] = f.observed_job(job)
        return "uid-" + name, True

    def read_job(self, namespace, name):
        self.calls.append(("read_job", name))
        return copy.deepcopy(self.jobs.get(name))

    def delete_job(self, namespace, name, uid):
        self.calls.append(("delete_job", name, uid))

    def set_pod_condition(self, namespace, pod, condition):
        self.calls.append(("pod", pod, condition["status"]))

    def post_event(self, regarding, type_, reason, note, action):
        self.events.append({"type": type_, "reason": reason, "message": note, "action": action})

    def patch_status(self, namespace, name, status, stored, resource_version):
        self.calls.append(("status", resource_version))
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict("moved on")
        # As the API server answers: the whole object, with the new status and version.
        written = copy.deepcopy(self.body) if self.body else {"metadata": {"generation": 1}}
        written["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        written["status"] = status
        return written


def _state(cluster):
    return State(cluster, OperatorConfig()), cluster.events


def _index(views=(), key=("ml", "qwen")) -> OwnerIndex:
    """An index holding `views` under the resource `key`, listed."""
    index: OwnerIndex = OwnerIndex()
    for i, view in enumerate(views):
        index.put(f"uid-{i}", key, view)
    return index


def _indexes(pods=(), resources=None) -> Indexes:
    """The indexes with `pods`; with pods, their ReplicaSet and our Deployment too."""
    return Indexes(
        resources=resources or {},
        pods=_index([PodView.from_body(p) for p in pods]),
        jobs=_index(),
        deployments=_index([ChildView.from_body(f.deployment_view_body())] if pods else []),
        services=_index(),
        network_policies=_index(),
        replicasets=_index([ReplicaSetView.from_body(f.replicaset())]),
    )


def test_sync_writes_children_then_status_then_events():
    cluster = FakeCluster()
    state, events = _state(cluster)
    body = f.dis(engine={"image": "lmsysorg/sglang:latest"})  # invalid: a Warning Event
    sync(state, ("ml", "qwen"), body, _indexes())
    assert cluster.calls == [("status", "100")]
    assert [e["reason"] for e in events] == ["InvalidSpec"]
    assert state.of(("ml", "qwen")).written["metadata"]["resourceVersion"] == "101"

    cluster.calls.clear()
    fixed = f.dis()
    fixed["metadata"]["generation"] = 2  # the user's fix is a new generation
    sync(state, ("ml", "qwen"), fixed, _indexes())
    # The Deployment, the two Services, the engines' NetworkPolicy, the status.
    assert [call[0] for call in cluster.calls] == [*["apply"] * 4, "status"]


def test_a_conflict_is_retried_from_a_fresh_read_and_announced_once():
    body = f.dis(engine={"image": "x:latest"})
    fresh = copy.deepcopy(body)
    fresh["metadata"]["resourceVersion"] = "105"
    state, events = _state(FakeCluster(conflicts=1, body=fresh))
    sync(state, ("ml", "qwen"), body, _indexes())
    assert state.cluster.calls == [("status", "100"), ("get", "qwen"), ("status", "105")]
    assert [e["reason"] for e in events] == ["InvalidSpec"]


def test_persistent_conflicts_post_nothing_and_ask_to_be_retried():
    body = f.dis(engine={"image": "x:latest"})
    state, events = _state(FakeCluster(conflicts=99, body=body))
    with pytest.raises(RetryLater) as raised:
        sync(state, ("ml", "qwen"), body, _indexes())
    assert raised.value.delay == 1
    assert events == []
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_reconcile_total{result="conflict"}' in text


def test_a_created_job_is_announced_even_if_the_status_write_conflicts():
    body = f.dis()
    body["status"] = {"revision": "x"}
    revision = revision_of(parse_dis(f.dis()))
    pods = [
        f.engine_pod("qwen-a", revision, ip="10.0.0.1"),
        f.engine_pod("qwen-b", revision, ip="10.0.0.2"),
    ]
    state, events = _state(FakeCluster(conflicts=1, body=body))
    sync(state, ("ml", "qwen"), body, _indexes(pods))
    creates = [c for c in state.cluster.calls if c[0] == "create_job"]
    assert len(creates) == 2, "planned again after the conflict; the second create is a no-op"
    assert [e["reason"] for e in events].count("ValidationStarted") == 1


def test_metrics_follow_the_status_and_are_forgotten():
    cluster = FakeCluster()
    state, _ = _state(cluster)
    body = f.dis()
    sync(state, ("ml", "qwen"), body, _indexes())
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_replicas{name="qwen",namespace="ml",state="desired"} 2.0' in text
    assert 'detinfer_condition{name="qwen",namespace="ml",type="Ready"} 0.0' in text
    # The spec's interval (f.dis() keeps the default), and each condition's reason now.
    assert 'detinfer_revalidation_interval_seconds{name="qwen",namespace="ml"} 3600.0' in text
    assert 'detinfer_resource_info{engine_kind="SGLang",name="qwen",namespace="ml"} 1.0' in text
    ready = [
        line
        for line in text.splitlines()
        if line.startswith('detinfer_condition_reason{name="qwen",namespace="ml"')
        and 'type="Ready"' in line
    ]
    assert len(ready) == 1 and ready[0].endswith(" 1.0"), ready
    metrics.observe(
        "ml",
        "qwen",
        DeterministicInferenceServiceStatus.model_validate(
            {
                "validation": {
                    "revision": "r",
                    "jobName": "j",
                    "verdict": "Deterministic",
                    "lastRunTime": "2026-11-22T10:00:00Z",
                    "lastSuccessTime": "2026-11-22T10:00:00Z",
                    "durationSeconds": 12,
                    "tokensUsed": 100,
                    "latencyP50Milliseconds": 250,
                    "tokensPerSecond": 90,
                    "suites": [
                        {"name": "Single", "samples": 4, "uniqueOutputs": 1, "passed": True},
                        {"name": "Prefix", "samples": 4, "uniqueOutputs": 2, "passed": False},
                        # One output, but of nothing: not reproducibility.
                        {
                            "name": "Mixed",
                            "samples": 4,
                            "uniqueOutputs": 1,
                            "passed": False,
                            "outcome": "CouldNotTest",
                        },
                        {"name": "Concurrent", "samples": 4, "uniqueOutputs": 1, "passed": True},
                    ],
                },
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ServerMismatch",
                        "lastTransitionTime": "2026-11-22T10:00:00Z",
                    }
                ],
            }
        ),
        consumed=None,
        revalidate_every_seconds=0,
        engine_kind="LlamaCpp",
    )
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_revalidation_interval_seconds{name="qwen",namespace="ml"} 0.0' in text
    # The engine kind the alerts join on: one series, the kind now (the pass before: SGLang).
    kinds = [line for line in text.splitlines() if line.startswith("detinfer_resource_info{")]
    assert kinds == [
        'detinfer_resource_info{engine_kind="LlamaCpp",name="qwen",namespace="ml"} 1.0'
    ], kinds
    # The reason replaced the one before: one series for the condition, ServerMismatch.
    ready = [
        line
        for line in text.splitlines()
        if line.startswith('detinfer_condition_reason{name="qwen",namespace="ml"')
        and 'type="Ready"' in line
    ]
    assert ready == [
        'detinfer_condition_reason{name="qwen",namespace="ml",reason="ServerMismatch",type="Ready"}'
        " 1.0"
    ], ready
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


def _drain(state):
    """Run what the workers would: a pass for each queued key, until none waits."""
    while len(state.queue):
        key = state.queue.get()
        try:
            delay = sync_key(state, key)
        finally:
            state.queue.done(key)
        if delay == 0:  # again at once, as the workers do (a follow-up pass)
            state.queue.add(key)


def test_child_events_reach_their_owner_only():
    cluster = FakeCluster()
    state, _ = _state(cluster)
    pods: OwnerIndex[PodView] = OwnerIndex()
    state.indexes = replace(_indexes(resources={("ml", "qwen"): [f.dis()]}), pods=pods)
    watch = ChildWatch(POD_KIND, pods, lambda key, front: handlers.child_changed(state, key, front))
    pods.listed(watch)  # as after its first list
    other = f.engine_pod("qwen-a", "r", instance="other")
    watch.handle({"type": "ADDED", "object": other})
    _drain(state)
    assert cluster.calls == []
    watch.handle({"type": "MODIFIED", "object": f.engine_pod("qwen-a", "r")})
    assert len(state.queue) == 1  # the trigger only queues
    _drain(state)
    assert cluster.calls[-1][0] == "status"


def test_applied_children_stand_in_until_the_index_catches_up():
    state, _ = _state(FakeCluster(body=f.dis()))
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    applied = {k: v[0] for k, v in state.of(("ml", "qwen")).applied.items()}
    assert set(applied) == {
        ("Service", "qwen-pods"),
        ("Service", "qwen"),
        ("Deployment", "qwen"),
        ("NetworkPolicy", "qwen-engine"),
    }
    state.cluster.calls.clear()
    # The watch has not delivered the children yet: nothing is applied twice.
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    assert not [c for c in state.cluster.calls if c[0] == "apply"]
    # The index catches up: the memory is dropped.
    indexed = [ChildView(kind, name, h, OWNED) for (kind, name), h in applied.items()]
    assert state.children(("ml", "qwen"), indexed) == indexed
    assert state.of(("ml", "qwen")).applied == {}
    # Someone changes the Deployment afterwards: the index shows it and it is applied again.
    others = [child for child in indexed if child.kind != "Deployment"]
    changed = [ChildView("Deployment", "qwen", "edited", OWNED), *others]
    indexes = replace(_indexes(), deployments=_index(changed[:1]), services=_index(changed[1:]))
    sync(state, ("ml", "qwen"), f.dis(), indexes)
    assert [c for c in state.cluster.calls if c[0] == "apply"] == [("apply", "Deployment", "qwen")]


def test_deleted_resource_is_forgotten():
    state, _ = _state(FakeCluster())
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    assert state.of(("ml", "qwen")).applied and state.of(("ml", "qwen")).written
    assert 'name="qwen"' in generate_latest(metrics.REGISTRY).decode()
    # kopf drops a deleted object from its indexes before the handler runs.
    asyncio.run(
        handlers.dis_changed(
            type="DELETED",
            namespace="ml",
            name="qwen",
            body=f.dis(),
            memo=kopf.Memo(state=state),
            resources_by_key={},
        )
    )
    _drain(state)
    assert ("ml", "qwen") not in state.resources
    assert 'name="qwen"' not in generate_latest(metrics.REGISTRY).decode()  # its series too


def test_periodic_pass_reconciles_every_known_resource_and_survives_errors():
    state, _ = _state(FakeCluster(body=f.dis()))
    Periodic(state).tick()  # before any handler ran: nothing known, nothing done
    assert state.cluster.calls == []
    state.indexes = _indexes(resources={("ml", "qwen"): [f.dis()], ("ml", "other"): [{"bad": 1}]})
    Periodic(state).tick()
    assert len(state.queue) == 2 and state.cluster.calls == []  # the pass only queues
    _drain(state)  # the bad body is logged and retried later; the good one is reconciled
    assert ("status", "100") in state.cluster.calls


def _ready_pods():
    revision = revision_of(parse_dis(f.dis()))
    return [
        f.engine_pod("qwen-a", revision, ip="10.0.0.1"),
        f.engine_pod("qwen-b", revision, ip="10.0.0.2"),
    ]


def test_the_created_jobs_uid_is_recorded_in_the_status():
    state, _ = _state(FakeCluster(body=f.dis()))
    sync(state, ("ml", "qwen"), f.dis(), _indexes(_ready_pods()))
    (create,) = [c for c in state.cluster.calls if c[0] == "create_job"]
    record = state.of(("ml", "qwen")).written["status"]["validationJob"]
    assert record["name"] == create[1] and record["uid"] == "uid-" + create[1]
    assert state.of(("ml", "qwen")).created_jobs[create[1]][0] == record["uid"]


def test_a_child_in_the_way_is_untouched_remembered_and_announced_once():
    state, events = _state(FakeCluster(body=f.dis(), foreign={("Deployment", "qwen")}))
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    applies = [c for c in state.cluster.calls if c[0] == "apply"]
    # The create found it; the pass planned again without it.
    assert applies[0] == ("apply", "Deployment", "qwen")
    assert applies[1:] == [
        ("apply", "Service", "qwen-pods"),
        ("apply", "Service", "qwen"),
        ("apply", "NetworkPolicy", "qwen-engine"),
    ]
    status = state.of(("ml", "qwen")).written["status"]
    ready = next(x for x in status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "ChildConflict" and "Deployment qwen exists" in ready["message"]
    assert [e["reason"] for e in events] == ["ChildConflict"]
    assert ("Deployment", "qwen") in state.of(("ml", "qwen")).foreign_children
    state.cluster.calls.clear()
    body = copy.deepcopy(state.of(("ml", "qwen")).written)
    sync(state, ("ml", "qwen"), body, _indexes())
    assert not [c for c in state.cluster.calls if c[:2] == ("apply", "Deployment")]
    assert len(events) == 1, "announced once"


def test_a_job_name_in_the_way_is_left_for_another():
    dis = parse_dis(f.dis())
    taken = validation_job_name(dis, revision_of(dis), ["qwen-a", "qwen-b"], None)
    state, events = _state(FakeCluster(body=f.dis(), foreign={("Job", taken)}))
    sync(state, ("ml", "qwen"), f.dis(), _indexes(_ready_pods()))
    names = [c[1] for c in state.cluster.calls if c[0] == "create_job"]
    assert names[0] == taken and len(names) == 2 and names[1] != taken
    assert state.of(("ml", "qwen")).written["status"]["validationJob"]["name"] == names[1]
    untrusted = [e["message"] for e in events if e["reason"] == "UntrustedObject"]
    assert len(untrusted) == 1 and untrusted[0].startswith(f"Job {taken} holds the name")


def test_ignored_objects_are_announced_once_per_object():
    forged = f.engine_pod("forged", "r", controller=[])
    state, events = _state(FakeCluster(body=f.dis()))
    sync(state, ("ml", "qwen"), f.dis(), _indexes([*_ready_pods(), forged]))
    assert [e["reason"] for e in events].count("UntrustedObject") == 1
    body = copy.deepcopy(state.of(("ml", "qwen")).written)
    sync(state, ("ml", "qwen"), body, _indexes([*_ready_pods(), forged]))
    assert [e["reason"] for e in events].count("UntrustedObject") == 1
    # A new pod of the same name is another object: announced again.
    again = copy.deepcopy(forged)
    again["metadata"]["uid"] = "uid-forged-2"
    sync(state, ("ml", "qwen"), body, _indexes([*_ready_pods(), again]))
    assert [e["reason"] for e in events].count("UntrustedObject") == 2


def test_the_body_is_parsed_once_into_a_resource_view():
    view = ResourceView.from_body(f.dis())
    assert isinstance(view.parsed, RevisionContext)
    assert view.parsed.revision == revision_of(parse_dis(f.dis()))
    assert (view.namespace, view.name, view.uid) == ("ml", "qwen", f.DIS_UID)
    invalid = ResourceView.from_body({**f.dis(engine={"image": "x:latest"}), "status": {"a": 1}})
    assert isinstance(invalid.parsed, SpecError) and "engine.image" in str(invalid.parsed)
    # A status of a shape the operator did not write reads as empty, and its keys are removed.
    assert invalid.status == DeterministicInferenceServiceStatus()
    assert invalid.status_keys == {"a"}


class _EventSink(http.server.BaseHTTPRequestHandler):
    """An API server that refuses every Event, recording what it was sent."""

    received: list = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"kind":"Status","code":403,"reason":"Forbidden"}')

    def log_message(self, *args):
        pass


def test_an_event_is_posted_as_detinfer_and_a_refusal_does_not_fail_the_pass():
    server = http.server.HTTPServer(("127.0.0.1", 0), _EventSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_port}"
        cluster = Cluster(client.ApiClient(configuration), instance="detinfer-abc")
        regarding = ResourceView.from_body(f.dis()).reference
        cluster.post_event(regarding, "Warning", "ChildConflict", "é" * 1000, "UpdateStatus")
    finally:
        server.shutdown()
    ((path, body),) = _EventSink.received
    assert path == "/apis/events.k8s.io/v1/namespaces/ml/events"
    assert body["reportingController"] == "detinfer.io/operator"
    assert body["reportingInstance"] == "detinfer-abc"
    assert body["regarding"] == regarding and regarding["uid"] == f.DIS_UID
    assert (body["type"], body["reason"], body["action"]) == (
        "Warning",
        "ChildConflict",
        "UpdateStatus",
    )
    assert len(body["note"].encode()) <= 1024 and body["note"].startswith("éé")
    assert body["metadata"]["name"].startswith("qwen.")


def test_children_still_recorded_as_created_are_taken_over_on_their_first_apply():
    state, _ = _state(FakeCluster(body=f.dis()))
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    assert state.cluster.created_applies == []  # the create itself costs no takeover
    applied = {k: v[0] for k, v in state.of(("ml", "qwen")).applied.items()}
    # The index shows them as created (an "Update" entry of ours); the spec changes.
    indexed = [ChildView(k, n, h, OWNED, created=True) for (k, n), h in applied.items()]
    indexes = replace(
        _indexes(),
        deployments=_index([v for v in indexed if v.kind != "Service"]),
        services=_index([v for v in indexed if v.kind == "Service"]),
    )
    changed = f.dis()
    changed["metadata"]["generation"] = 2
    changed["spec"]["resources"]["memory"] = "32Gi"
    sync(state, ("ml", "qwen"), changed, indexes)
    assert ("Deployment", "qwen") in state.cluster.created_applies
    # Applied since: the stand-in is no longer "created", the next apply takes nothing over.
    (deployment,) = [v for v in state.children(("ml", "qwen"), indexed) if v.kind == "Deployment"]
    assert deployment.created is False


def test_resource_bodies_are_kept_without_managed_fields():
    body = f.dis()
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Apply"}]
    kept = asyncio.run(handlers.resources_by_key(namespace="ml", name="qwen", body=body))
    assert "managedFields" not in kept[("ml", "qwen")]["metadata"]
    assert body["metadata"]["managedFields"]  # the caller's copy is untouched
    cluster = FakeCluster(body=body)
    state, _ = _state(cluster)
    sync(state, ("ml", "qwen"), f.dis(), _indexes())
    assert "managedFields" not in state.of(("ml", "qwen")).written["metadata"]


def test_a_new_resources_deployment_is_written_first_and_the_rest_follows_at_once():
    cluster = FakeCluster(body=f.dis())
    state, events = _state(cluster)
    state.indexes = _indexes(resources={("ml", "qwen"): [f.dis()]})
    assert sync_key(state, ("ml", "qwen")) == 0.0  # queued again at once
    assert cluster.calls == [("apply", "Deployment", "qwen")] and events == []
    assert sync_key(state, ("ml", "qwen")) is None
    assert [call[:2] for call in cluster.calls[1:]] == [
        ("apply", "Service"),
        ("apply", "Service"),
        ("apply", "NetworkPolicy"),
        ("status", "100"),
    ]
    # Once a status is written, a pass is whole (here: the index still shows the Deployment
    # unapplied, as applied by this process: nothing to write).
    state.indexes = _indexes(resources={("ml", "qwen"): [state.of(("ml", "qwen")).written]})
    cluster.calls.clear()
    assert sync_key(state, ("ml", "qwen")) is None
    assert cluster.calls == []


# ---- a restart between the create of a validation Job and the index showing it (#13) ----


def _validating():
    """A first process's pass that created a validation Job and recorded it in the status: the
    body it wrote, the Job's name, and the Job as the API server holds it."""
    first = FakeCluster(body=f.dis())
    state, _ = _state(first)
    sync(state, ("ml", "qwen"), f.dis(), _indexes(_ready_pods()))
    (name,) = [call[1] for call in first.calls if call[0] == "create_job"]
    body = state.of(("ml", "qwen")).written
    assert body["status"]["validationJob"]["uid"] == "uid-" + name
    return body, name, first.jobs[name]


def test_a_recorded_job_the_index_lacks_is_read_by_name_not_called_gone():
    """A restarted process remembers no Job it created, and its Jobs index may not show the
    recorded one yet: the Job is read by name, found, and awaited; no second Job is made."""
    body, name, job = _validating()
    cluster = FakeCluster(body=body, jobs={name: job})
    restarted, events = _state(cluster)  # a new process: nothing remembered
    sync(restarted, ("ml", "qwen"), body, _indexes(_ready_pods()))  # the Jobs index: empty
    assert ("read_job", name) in cluster.calls
    assert [call for call in cluster.calls if call[0] == "create_job"] == []
    assert [e["reason"] for e in events] == []
    status = (restarted.of(("ml", "qwen")).written or body)["status"]
    assert status["validationJob"]["name"] == name
    validated = next(x for x in status["conditions"] if x["type"] == "Validated")
    assert validated["reason"] != "CouldNotValidate"


def test_a_recorded_job_the_api_server_does_not_have_is_gone():
    body, name, _ = _validating()
    cluster = FakeCluster(body=body)  # no Job of that name
    restarted, events = _state(cluster)
    sync(restarted, ("ml", "qwen"), body, _indexes(_ready_pods()))
    assert ("read_job", name) in cluster.calls
    assert "CouldNotValidate" in [e["reason"] for e in events]
    (again,) = [call[1] for call in cluster.calls if call[0] == "create_job"]
    assert again != name  # a new run after the lost one


def test_a_recorded_job_whose_name_another_uid_holds_is_gone():
    body, name, job = _validating()
    namesake = copy.deepcopy(job)
    namesake["metadata"]["uid"] = "uid-namesake"
    cluster = FakeCluster(body=body, jobs={name: namesake})
    restarted, events = _state(cluster)
    sync(restarted, ("ml", "qwen"), body, _indexes(_ready_pods()))
    assert "CouldNotValidate" in [e["reason"] for e in events]


def test_no_pass_plans_from_a_child_index_that_has_not_listed():
    body, _, _ = _validating()
    cluster = FakeCluster(body=body)  # the Job is gone: a pass would say so, if it ran
    state, events = _state(cluster)
    jobs: OwnerIndex[JobView] = OwnerIndex()
    jobs.expect("the Jobs watch")
    state.indexes = replace(_indexes(_ready_pods(), {("ml", "qwen"): [body]}), jobs=jobs)
    assert sync_key(state, ("ml", "qwen")) == UNSYNCED_RETRY_SECONDS
    assert cluster.calls == [] and events == []
    jobs.listed("the Jobs watch")
    assert sync_key(state, ("ml", "qwen")) is None
    assert "CouldNotValidate" in [e["reason"] for e in events]


class _JobServer(http.server.BaseHTTPRequestHandler):
    """An API server where a Job already holds every name: a create answers 409, a read
    answers `existing`."""

    existing: dict = {}

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})

    def do_GET(self):
        self._answer(200, self.existing)

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


def _create_over(existing, job):
    _JobServer.existing = existing
    server = http.server.HTTPServer(("127.0.0.1", 0), _JobServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_port}"
        return Cluster(client.ApiClient(configuration)).create_job(job, {})
    finally:
        server.shutdown()


def test_a_create_adopts_the_same_run_an_earlier_process_made():
    """Stopped after the create and before the status write: the next process's create of the
    same run answers 409, and the Job there, controlled by this resource with this run's
    template, is adopted instead of a second Job under another name."""
    _, name, existing = _validating()
    wanted = copy.deepcopy(existing)  # as the plan builds it: no UID, no creation time
    del wanted["metadata"]["uid"], wanted["metadata"]["creationTimestamp"]
    assert _create_over(existing, wanted) == ("uid-" + name, False)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda job: job["metadata"]["ownerReferences"][0].update(uid="other"), id="owner"
        ),
        pytest.param(
            lambda job: job["spec"]["template"]["spec"]["containers"][0]["args"].append("--x"),
            id="args",
        ),
        pytest.param(
            lambda job: job["spec"]["template"]["spec"].update(
                initContainers=[{"name": "first", "image": "busybox"}]
            ),
            id="init-container",
        ),
        pytest.param(
            lambda job: job["metadata"].update(deletionTimestamp="2026-11-22T10:00:00Z"),
            id="deleting",
        ),
    ],
)
def test_a_create_never_adopts_another_job_under_the_name(change):
    _, name, existing = _validating()
    wanted = copy.deepcopy(existing)
    del wanted["metadata"]["uid"], wanted["metadata"]["creationTimestamp"]
    change(existing)
    with pytest.raises(InTheWay) as caught:
        _create_over(existing, wanted)
    assert caught.value.name == name


def test_the_reporting_instance_is_the_pods_hostname(monkeypatch):
    # The kubelet sets HOSTNAME to the pod's name in every container (the pod runner too).
    monkeypatch.setenv("HOSTNAME", "detinfer-5f7c-q2")
    assert Cluster(client.ApiClient(client.Configuration())).instance == "detinfer-5f7c-q2"
    monkeypatch.delenv("HOSTNAME")
    assert Cluster(client.ApiClient(client.Configuration())).instance == socket.gethostname()


def test_the_status_patch_removes_what_the_new_status_no_longer_holds_at_every_depth():
    """A JSON merge patch merges nested objects: a nested field left out would stay (found when
    status.attentionSearch.trying outlived the end of the search)."""
    from detinfer.controller.cluster import replacing

    stored = {
        "revision": "r1",
        "validationJob": {"name": "j", "uid": "u"},
        "attentionSearch": {"trying": "SplitKV", "trials": [1, 2], "inner": {"a": 1, "b": 2}},
        "overhead": {"measured": True, "headlinePercent": 7.0},
    }
    wanted = {
        "revision": "r1",
        "attentionSearch": {"trials": [1, 2, 3], "chosen": "Tiled", "inner": {"a": 1}},
        "overhead": {"measured": False},
    }
    assert replacing(stored, wanted) == {
        "revision": "r1",
        "validationJob": None,
        "attentionSearch": {
            "trying": None,
            "trials": [1, 2, 3],
            "chosen": "Tiled",
            "inner": {"a": 1, "b": None},
        },
        "overhead": {"measured": False, "headlinePercent": None},
    }
    assert replacing({}, wanted) == wanted


def test_the_warm_up_plans_a_valid_resource_and_every_child_without_writing():
    from detinfer.controller.sync import warm_up

    the_plan = warm_up(OperatorConfig())  # no cluster: nothing it could write to
    assert not the_plan.invalid and the_plan.status is not None
    # The made-up resource measures its overhead: the baseline's policy too.
    assert [o["kind"] for o in the_plan.apply] == [
        "Deployment",
        "Service",
        "Service",
        "NetworkPolicy",
        "NetworkPolicy",
    ]


def test_the_indexes_are_all_there_from_the_start_up():
    """Before, kopf's index of the resources reached the state with the first trigger of a
    resource: a child's event that came first was dropped. Now the start-up handler sets every
    index, typed, so a child's event queues its known resource before any trigger ran."""
    state, _ = _state(FakeCluster(body=f.dis()))
    watches = ChildWatches(client.ApiClient(), lambda key, front: None)  # never started
    resources = {("ml", "qwen"): [f.dis()]}  # kopf's index, as it hands it to start-up handlers
    memo = kopf.Memo(state=state, watches=watches, events=EventPoster(lambda *a: None, 1))
    try:
        handlers.configure(settings=kopf.OperatorSettings(), memo=memo, resources_by_key=resources)
        assert isinstance(state.indexes, Indexes)
        assert state.indexes.resources is resources
        assert state.indexes.pods is watches.indexes["pods"]
        assert state.indexes.jobs is watches.indexes["jobs"]
        handlers.child_changed(state, ("ml", "qwen"))
        handlers.child_changed(state, ("ml", "unknown"))
        assert len(state.queue) == 1
    finally:
        handlers.stop(memo)
