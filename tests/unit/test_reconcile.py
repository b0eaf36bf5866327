"""The reconciliation plan, scenario by scenario, against a small in-memory cluster.

`World` plays the API server for the plan: it stores what the plan writes (with the UIDs the API
server gives, and the ReplicaSet the Deployment controller makes), so each scenario can check both
the writes and that a second pass over the resulting state writes nothing.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detinfer.api import constants as c
from detinfer.api.constants import ConditionType as T
from detinfer.builders.common import applied_hash
from detinfer.config import OperatorConfig
from detinfer.controller.observed import (
    ChildView,
    JobView,
    Observed,
    PodView,
    ReplicaSetView,
    ResourceView,
)
from detinfer.controller.reconcile import Plan, plan
from detinfer.controller.trust import Memory
from detinfer.controller.writes import Apply, CreateJob, DeleteJob, with_job_uids
from tests.support import factories as f

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(validator_image="detinfer@" + f.DIGEST, retry_after_seconds=60)


def writes(p: Plan) -> int:
    """How many writes the plan asks for."""
    return p.count()


def observed(world: World) -> Observed:
    return Observed(
        pods=[PodView.from_body(p) for p in world.pods.values()],
        jobs=[JobView.from_body(j) for j in world.jobs.values()],
        children=[ChildView.from_body(ch) for ch in world.children.values()],
        replicasets=[ReplicaSetView.from_body(rs) for rs in world.replicasets.values()],
    )


class World:
    def __init__(self, body: dict[str, Any]):
        self.body = body
        self.pods: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.children: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[str, dict[str, Any]] = {}
        self.now = T0
        self.events: list = []
        # What the operator process remembers (trust.Memory).
        self.reported: frozenset[str] = frozenset()
        self.foreign_children: dict[tuple[str, str], str] = {}
        self.taken_job_names: dict[str, str] = {}

    def plan(self) -> Plan:
        return plan(
            ResourceView.from_body(self.body),
            observed(self),
            CONFIG,
            self.now,
            memory=Memory(
                foreign_children=self.foreign_children,
                taken_job_names=self.taken_job_names,
                reported=self.reported,
            ),
        )

    def step(self) -> Plan:
        """Plan and carry out the writes, as the operator would."""
        p = self.plan()
        for obj in p.apply:
            key = (obj["kind"], obj["metadata"]["name"])
            stored = copy.deepcopy(obj)
            before = self.children.get(key)
            stored["metadata"]["uid"] = (
                before["metadata"]["uid"]
                if before
                else f.DEPLOYMENT_UID
                if key[0] == "Deployment"
                else f"uid-{key[1]}"
            )
            self.children[key] = stored
            if key[0] == "Deployment" and not self.replicasets:
                rs = f.replicaset()
                self.replicasets[rs["metadata"]["name"]] = rs
        for name in p.delete_jobs:
            self.jobs.pop(name, None)
        for name, uid in p.delete_policies.items():
            if self.children[("NetworkPolicy", name)]["metadata"]["uid"] == uid:
                del self.children[("NetworkPolicy", name)]
        uids = {}
        for create in p.each(CreateJob):
            self.jobs[create.name] = self.made_job(create)
            uids[create.name] = self.jobs[create.name]["metadata"]["uid"]
        # As the executor does: the status records the UID the create response gave.
        status = with_job_uids(p.status, uids) if p.status is not None else None
        assert not uids or status is not None
        for pod, condition in p.pod_conditions.items():
            conds = [
                x for x in self.pods[pod]["status"]["conditions"] if x["type"] != condition["type"]
            ]
            self.pods[pod]["status"]["conditions"] = [*conds, condition]
        if status is not None:
            self.body["status"] = status.to_wire()
            self.body["metadata"]["resourceVersion"] = str(
                int(self.body["metadata"]["resourceVersion"]) + 1
            )
        self.events += p.events
        self.reported = frozenset(p.ignored)
        return p

    def made_job(self, create: CreateJob) -> dict[str, Any]:
        """The Job a create makes, as the index then shows it."""
        assert create.purpose == "validation"
        created = T0 + timedelta(seconds=len(self.jobs))
        return f.observed_job(create.body, created=created.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def settle(self) -> Plan:
        """Step until a pass writes nothing; return the last writing plan."""
        last = self.step()
        for _ in range(5):
            p = self.step()
            if writes(p) == 0:
                return last
            last = p
        raise AssertionError("the plan does not converge")

    # --- the cluster's side of the story ---

    @property
    def revision(self) -> str:
        return self.body["status"]["revision"]

    def add_pods(
        self, *names: str, revision: str | None = None, ip: str | None = "auto", **kwargs
    ) -> None:
        for name in names:
            address = f"10.0.0.{len(self.pods) + 1}" if ip == "auto" else ip
            self.pods[name] = f.engine_pod(name, revision or self.revision, ip=address, **kwargs)

    def finish_job(
        self, exit_code: int | None, message: str | None, failed: str | None = None
    ) -> str:
        job = self.latest_job()
        name = job["metadata"]["name"]
        if exit_code is not None:
            self.pods[name + "-pod"] = f.validator_pod(job, exit_code, message)
        if failed or exit_code is not None:
            self.jobs[name] = f.observed_job(
                job,
                created=job["metadata"]["creationTimestamp"],
                failed=failed,
                complete=exit_code == 0,
            )
        return name

    def latest_job(self) -> dict[str, Any]:
        return max(self.jobs.values(), key=lambda j: j["metadata"]["creationTimestamp"])

    def condition(self, type_: str) -> dict[str, Any]:
        return next(x for x in self.body["status"]["conditions"] if x["type"] == type_)

    def gate(self, pod: str) -> dict[str, Any] | None:
        return next(
            (x for x in self.pods[pod]["status"]["conditions"] if x["type"] == c.READINESS_GATE),
            None,
        )


def validated_world(**spec) -> World:
    """Two pods that passed validation: the steady state."""
    world = World(f.dis(**spec))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.now += timedelta(seconds=CONFIG.gather_seconds)  # in case more replicas are desired
    world.settle()
    world.finish_job(0, f.summary())
    world.settle()
    return world


def test_first_visit_applies_children_and_sets_every_condition():
    world = World(f.dis())
    p = world.step()
    assert [(o["kind"], o["metadata"]["name"]) for o in p.apply] == [
        ("Deployment", "qwen"),
        ("Service", "qwen-pods"),
        ("Service", "qwen"),
        ("NetworkPolicy", "qwen-engine"),
    ]
    assert p.create_job is None
    types = {x["type"]: (x["status"], x["reason"]) for x in p.status.to_wire()["conditions"]}
    assert types == {
        T.VALIDATED: ("Unknown", "ValidationPending"),
        T.DEGRADED: ("False", "AsExpected"),
        T.AVAILABLE: ("False", "NoValidatedReplicas"),
        T.PROGRESSING: ("True", "WaitingForPods"),
        T.READY: ("False", "WaitingForPods"),
        T.ADMIN_ENDPOINTS_CLOSED: ("True", "AdminKey"),
    }
    assert all(x["observedGeneration"] == 1 for x in p.status.to_wire()["conditions"])
    assert p.status.to_wire()["observedGeneration"] == 1
    assert p.status.to_wire()["replicas"] == {"desired": 2, "running": 0, "validated": 0}
    assert writes(world.step()) == 0, "a second pass over the same state must write nothing"


def test_invalid_spec_sets_ready_false_once_and_touches_no_child():
    world = World(f.dis(engine={"image": "lmsysorg/sglang:latest"}))
    p = world.step()
    assert p.apply == [] and p.create_job is None and p.invalid is not None
    ready = world.condition(T.READY)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert (
        "spec.engine.image: engine.image lmsysorg/sglang:latest is not pinned" in ready["message"]
    )
    assert [e.reason for e in p.events] == ["InvalidSpec"] and p.events[0].type == "Warning"
    again = world.step()
    assert writes(again) == 0 and again.events == [], "no retry loop, no repeated Event"


def test_invalid_update_keeps_existing_children_and_status():
    world = validated_world()
    children = copy.deepcopy(world.children)
    world.body["spec"]["replicas"] = -3
    world.body["metadata"]["generation"] = 2
    p = world.step()
    assert p.apply == [] and p.delete_jobs == [] and p.pod_conditions == {}
    assert world.children == children
    assert world.body["status"]["fingerprint"] == f.FINGERPRINT, "nothing recorded is lost"
    assert world.condition(T.READY)["reason"] == "InvalidSpec"
    assert world.condition(T.READY)["observedGeneration"] == 2


def test_ready_pods_get_one_validation_job():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    p = world.step()
    job = p.create_job
    assert job is not None
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"
    assert "--expected-fingerprint" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [e.reason for e in p.events] == ["ValidationStarted"]
    assert world.condition(T.PROGRESSING)["reason"] == "Validating"
    assert world.condition(T.VALIDATED)["reason"] == "Validating"
    # The Job is running: nothing more to do, however often the plan runs.
    for _ in range(3):
        assert writes(world.step()) == 0
    assert len(world.jobs) == 1


def test_replicas_starting_together_are_validated_together():
    world = World(f.dis(replicas=3))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.add_pods("qwen-c", ready=False)
    assert world.step().create_job is None, "qwen-c is still starting: wait for it"
    world.now += timedelta(seconds=CONFIG.gather_seconds - 1)
    assert world.step().create_job is None
    world.pods["qwen-c"] = f.engine_pod("qwen-c", world.revision, ip="10.0.0.9")
    job = world.step().create_job
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b,qwen-c"


def test_a_replica_that_never_starts_does_not_block_the_others():
    world = World(f.dis(replicas=3))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.add_pods("qwen-c", ip=None, phase="Pending", unschedulable="0/2 nodes are available")
    assert world.step().create_job is None
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    job = world.step().create_job
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"


def test_pods_that_are_not_ready_are_not_validated():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", ready=False)
    world.add_pods("qwen-b", ip=None, phase="Pending")
    assert world.step().create_job is None
    assert world.condition(T.PROGRESSING)["message"].startswith("0 of 2 pod(s)")


def test_a_passing_summary_makes_pods_and_resource_ready():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    job = world.finish_job(0, f.summary())
    p = world.step()
    assert set(p.pod_conditions) == {"qwen-a", "qwen-b"}
    assert all(
        x["status"] == "True" and x["type"] == c.READINESS_GATE for x in p.pod_conditions.values()
    )
    status = world.body["status"]
    assert status["fingerprint"] == f.FINGERPRINT
    assert status["fingerprintRevision"] == status["revision"]
    assert status["shortFingerprint"] == "f0f0f0f0f0f0"
    assert status["validation"]["jobName"] == job
    assert status["validation"]["verdict"] == "Deterministic"
    assert status["validation"]["uniqueOutputs"] == 1
    assert status["validation"]["tokensUsed"] == 4096
    assert status["validation"]["durationSeconds"] == 12
    # The validator's own load figures are the validation's; status.overhead is the baseline's.
    assert {
        k: status["validation"][k]
        for k in ("latencyP50Milliseconds", "latencyP95Milliseconds", "tokensPerSecond")
    } == {"latencyP50Milliseconds": 120, "latencyP95Milliseconds": 250, "tokensPerSecond": 812}
    assert "overhead" not in status
    assert status["replicas"] == {"desired": 2, "running": 2, "validated": 2}
    for type_, expected in [
        (T.READY, "True"),
        (T.VALIDATED, "True"),
        (T.AVAILABLE, "True"),
        (T.PROGRESSING, "False"),
        (T.DEGRADED, "False"),
    ]:
        assert world.condition(type_)["status"] == expected, type_
    assert {e.reason for e in p.events} == {"Deterministic", "FingerprintRecorded"}
    assert p.consumed.value == "Deterministic"
    assert writes(world.step()) == 0


def test_gates_not_yet_in_the_index_start_no_second_job():
    """The watch may deliver the status that records a run before the pods' new readiness
    gates: the pods of that run are not new pods to validate (seen at 1000 resources)."""
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    world.finish_job(0, f.summary())
    p = world.plan()
    assert set(p.pod_conditions) == {"qwen-a", "qwen-b"}
    world.body["status"] = p.status.to_wire()  # only the status write has been seen
    lagging = world.plan()
    assert lagging.create_job is None
    assert world.gate("qwen-a") is None  # the gates really were not there
    for pod, condition in p.pod_conditions.items():  # then the watch delivers them
        world.pods[pod]["status"]["conditions"].append(condition)
    assert world.settle().create_job is None
    assert world.condition(T.READY)["status"] == "True"
    assert len(world.jobs) == 1


def test_a_failing_summary_degrades_and_keeps_pods_unready():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    reason = "Single: batch size 9 diverges from batch size 1 at token 17 (1234 vs 871)"
    world.finish_job(
        1,
        f.failing_summary(reason),
    )
    p = world.step()
    assert all(
        x["status"] == "False" and x["reason"] == "NotDeterministic"
        for x in p.pod_conditions.values()
    )
    degraded = world.condition(T.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", "NotDeterministic")
    assert reason in degraded["message"]
    assert world.condition(T.VALIDATED)["status"] == "False"
    assert world.condition(T.READY)["status"] == "False"
    assert world.condition(T.PROGRESSING)["reason"] == "ValidationFailed"
    assert world.body["status"].get("fingerprint") is None
    assert [e.type for e in p.events] == ["Warning"]
    assert writes(world.step()) == 0, "a failed pod is not re-validated in a loop"


def test_a_server_that_contradicts_the_spec_fails_every_pod_with_the_reason():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    reason = (
        "server mismatch: qwen-a: attention backend: expected fa3, found flashinfer "
        "(attention_backend); the suites did not run"
    )
    server = {"version": "0.5.23", "deterministicInference": True, "tensorParallelSize": 1}
    world.finish_job(
        1,
        f.summary(
            "ServerMismatch",
            reason=reason,
            fingerprint=None,
            suites=[],
            tokensCompared=0,
            failedEndpoints=["qwen-a", "qwen-b"],
            server=server,
        ),
    )
    p = world.step()
    assert {n: (x["status"], x["reason"]) for n, x in p.pod_conditions.items()} == {
        "qwen-a": ("False", "ServerMismatch"),
        "qwen-b": ("False", "ServerMismatch"),
    }
    assert all(x["message"] == reason for x in p.pod_conditions.values())
    for condition in (T.VALIDATED, T.DEGRADED):
        assert world.condition(condition)["reason"] == "ServerMismatch"
        assert world.condition(condition)["message"] == reason
    assert world.condition(T.READY)["status"] == "False"
    assert world.body["status"]["validation"]["server"] == server
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "ServerMismatch")]
    assert writes(world.step()) == 0, "a wrong deployment is not re-validated in a loop"


def test_failed_endpoints_blame_only_those_pods():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    world.finish_job(
        1, f.summary("NotDeterministic", reason="qwen-b diverges", failedEndpoints=["qwen-b"])
    )
    world.step()
    assert world.gate("qwen-a")["status"] == "True"
    assert world.gate("qwen-b")["status"] == "False"
    assert world.condition(T.AVAILABLE)["status"] == "True"
    assert world.condition(T.READY)["status"] == "False"


def test_a_job_without_summary_is_could_not_validate_and_is_retried():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    first = world.finish_job(
        None, None, failed="DeadlineExceeded: Job was active longer than specified deadline"
    )
    p = world.step()
    validated = world.condition(T.VALIDATED)
    assert (validated["status"], validated["reason"]) == ("Unknown", "CouldNotValidate")
    assert "DeadlineExceeded" in validated["message"]
    assert world.condition(T.DEGRADED)["status"] == "False", "not a determinism verdict"
    assert all(x["reason"] == "CouldNotValidate" for x in p.pod_conditions.values())
    assert world.step().create_job is None, "no retry before retryAfterSeconds"
    world.now += timedelta(seconds=61)
    retry = world.step().create_job
    assert retry is not None and retry["metadata"]["name"] != first


def test_garbage_or_inconsistent_summaries_are_could_not_validate():
    for exit_code, message, words in [
        (0, "not json", "not JSON"),
        (0, "", "left no summary"),
        (137, None, "exit code 137"),
        (0, f.summary("NotDeterministic"), "exited 0 but its summary says NotDeterministic"),
        (1, '{"schemaVersion": 9, "verdict": "Deterministic"}', "schemaVersion 9"),
    ]:
        world = World(f.dis())
        world.settle()
        world.add_pods("qwen-a", "qwen-b")
        world.settle()
        world.finish_job(exit_code, message)
        world.step()
        validated = world.condition(T.VALIDATED)
        assert validated["reason"] == "CouldNotValidate", message
        assert words in validated["message"], (words, validated["message"])
        assert world.condition(T.DEGRADED)["status"] == "False"


def test_a_deterministic_summary_without_evidence_is_not_a_pass():
    lacking_suite = {
        "name": "Single",
        "samples": 16,
        "uniqueOutputs": 1,
        "passed": True,
        "outcome": "CouldNotTest",
        "reason": "qwen-a: no output tokens in 16 samples",
    }
    empty_pass = {**lacking_suite, "outcome": "Passed", "reason": None}
    for message, words in [
        (f.summary(tokensCompared=0), "without evidence: 0 tokens compared"),
        (f.summary(fingerprint=None), "without evidence: no fingerprint"),
        (f.summary(suites=[lacking_suite]), "suite Single is CouldNotTest"),
        (f.summary(suites=[empty_pass]), "suite Single passed on 0 tokens compared"),
        (
            f.summary(suites=[{k: v for k, v in empty_pass.items() if k != "outcome"}]),
            "suite Single is without an outcome",
        ),
    ]:
        world = World(f.dis())
        world.settle()
        world.add_pods("qwen-a", "qwen-b")
        world.settle()
        world.finish_job(0, message)
        p = world.step()
        validated = world.condition(T.VALIDATED)
        assert (validated["status"], validated["reason"]) == ("Unknown", "CouldNotValidate")
        assert words in validated["message"], (words, validated["message"])
        assert world.condition(T.DEGRADED)["status"] == "False", "not a determinism verdict"
        assert all(x["status"] == "False" for x in p.pod_conditions.values())
        assert world.body["status"].get("fingerprint") is None, "nothing is recorded"


def test_a_new_pod_is_held_to_the_recorded_fingerprint():
    world = validated_world(replicas=3)
    assert world.condition(T.READY)["status"] == "False"
    world.add_pods("qwen-c")
    p = world.step()
    args = p.create_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--expected-fingerprint") + 1] == f.FINGERPRINT
    assert p.create_job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-c"
    world.settle()
    # The validator reports Deterministic but with another fingerprint: the operator checks too.
    world.finish_job(0, f.summary(fingerprint=f.OTHER_FINGERPRINT))
    world.step()
    assert world.gate("qwen-c")["reason"] == "FingerprintMismatch"
    assert world.condition(T.DEGRADED)["reason"] == "FingerprintMismatch"
    assert world.body["status"]["fingerprint"] == f.FINGERPRINT, "the record is kept"
    assert world.gate("qwen-a")["status"] == "True"


def test_enforce_passes_the_expected_fingerprint():
    world = World(
        f.dis(
            validation={"fingerprintPolicy": "Enforce", "expectedFingerprint": f.OTHER_FINGERPRINT}
        )
    )
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    job = world.step().create_job
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--expected-fingerprint") + 1] == f.OTHER_FINGERPRINT


def test_rollout_keeps_old_pods_serving_until_new_ones_pass():
    world = validated_world()
    old_revision = world.revision
    world.body["spec"]["engine"]["samplingSeed"] = 7
    world.body["metadata"]["generation"] = 2
    p = world.step()
    new_revision = world.revision
    assert new_revision != old_revision
    deployment = next(o for o in p.apply if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"][c.LABEL_REVISION] == new_revision
    client = world.children[("Service", "qwen")]
    assert client["spec"]["selector"][c.LABEL_REVISION] == old_revision, "old pods keep serving"
    assert world.condition(T.AVAILABLE)["status"] == "True"
    assert world.condition(T.READY)["status"] == "False"
    world.add_pods("qwen-c", "qwen-d", revision=new_revision)
    job = world.step().create_job
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-c,qwen-d"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--expected-fingerprint" not in args, "a new revision records its own fingerprint"
    world.settle()
    world.finish_job(0, f.summary(fingerprint=f.OTHER_FINGERPRINT))
    world.settle()
    assert world.children[("Service", "qwen")]["spec"]["selector"][c.LABEL_REVISION] == new_revision
    assert world.body["status"]["fingerprint"] == f.OTHER_FINGERPRINT
    assert world.condition(T.READY)["status"] == "True"


def test_spec_change_cancels_a_running_job_of_the_old_revision():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    running = world.latest_job()["metadata"]["name"]
    world.body["spec"]["model"]["revision"] = "e" * 40
    p = world.step()
    assert p.delete_jobs == [running]
    assert [e.reason for e in p.events] == ["ValidationJobCancelled"]


def test_revalidation_runs_on_every_ready_pod_after_the_interval():
    world = validated_world(validation={"revalidateEverySeconds": 600})
    assert writes(world.step()) == 0
    world.now += timedelta(seconds=599)
    assert writes(world.step()) == 0
    world.now += timedelta(seconds=2)
    job = world.step().create_job
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"
    world.settle()
    # Drift: the same pods now disagree with the recorded fingerprint.
    world.finish_job(
        1,
        f.summary(
            "FingerprintMismatch", reason="fingerprint changed", fingerprint=f.OTHER_FINGERPRINT
        ),
    )
    world.step()
    assert world.condition(T.DEGRADED)["reason"] == "FingerprintMismatch"
    assert world.gate("qwen-a")["status"] == "False"


def test_no_revalidation_when_disabled():
    world = validated_world(validation={"revalidateEverySeconds": 0})
    world.now += timedelta(days=30)
    assert writes(world.step()) == 0


def test_unschedulable_pods_are_reported():
    world = World(f.dis())
    world.settle()
    world.pods["qwen-a"] = f.engine_pod(
        "qwen-a",
        world.revision,
        ip=None,
        phase="Pending",
        unschedulable="0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    )
    world.step()
    progressing = world.condition(T.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == ("True", "PodsUnschedulable")
    assert "didn't match Pod's node affinity" in progressing["message"]
    assert world.condition(T.READY)["reason"] == "PodsUnschedulable"


def test_scaled_to_zero():
    world = World(f.dis(replicas=0))
    world.settle()
    assert {
        x["reason"]
        for x in world.body["status"]["conditions"]
        if x["type"] != T.ADMIN_ENDPOINTS_CLOSED
    } <= {"ScaledToZero", "AsExpected"}
    assert world.condition(T.READY)["status"] == "False"


def test_drifted_child_is_reapplied_and_only_it():
    world = validated_world()
    world.children[("Deployment", "qwen")]["metadata"]["annotations"][c.ANNOTATION_APPLIED_HASH] = (
        "x"
    )
    p = world.step()
    assert [(o["kind"], o["metadata"]["name"]) for o in p.apply] == [("Deployment", "qwen")]
    del world.children[("Service", "qwen-pods")]
    assert [o["metadata"]["name"] for o in world.step().apply] == ["qwen-pods"]
    assert all(applied_hash(o) for o in world.children.values())


def test_deleted_pods_are_not_counted_or_validated():
    world = validated_world()
    world.pods["qwen-a"]["metadata"]["deletionTimestamp"] = "2026-11-22T10:05:00Z"
    world.step()
    assert world.body["status"]["replicas"]["validated"] == 1
    assert world.condition(T.READY)["status"] == "False"


# ---- trust: only our own Job decides, only our Deployment's pods count ----


def validating_world(**spec) -> World:
    """Two pods, their validation Job created and running."""
    world = World(f.dis(**spec))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.settle()
    return world


def warnings(p: Plan) -> list[str]:
    return [e.message for e in p.events if e.reason == "UntrustedObject"]


def test_the_job_uid_is_recorded_and_cleared_once_read():
    world = validating_world()
    job = world.latest_job()
    record = world.body["status"]["validationJob"]
    assert record == {
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "revision": world.revision,
    }
    world.finish_job(0, f.summary())
    world.step()
    assert "validationJob" not in world.body["status"]
    assert world.body["status"]["validation"]["jobName"] == job["metadata"]["name"]


def test_a_forged_validator_pod_changes_nothing_and_is_reported_once():
    world = validating_world()
    job = world.latest_job()
    # Anyone may create a pod with the validator's labels and a Deterministic "result".
    world.pods["forged"] = f.validator_pod(job, 0, f.summary(), name="forged", controller=[])
    status = copy.deepcopy(world.body["status"])
    p = world.step()
    assert p.pod_conditions == {} and p.status is None and p.consumed is None
    assert world.body["status"] == status
    assert world.gate("qwen-a") is None and world.gate("qwen-b") is None
    assert [e.type for e in p.events] == ["Warning"]
    (message,) = warnings(p)
    assert message.startswith("pod forged looks like a validator") and "controller: none" in message
    again = world.step()
    assert writes(again) == 0 and again.events == [], "reported once, not once per pass"
    # The real Job's own pod still decides.
    world.finish_job(0, f.summary())
    world.step()
    assert world.gate("qwen-a")["status"] == "True"
    assert world.body["status"]["fingerprint"] == f.FINGERPRINT


def test_a_forged_job_with_a_failing_pod_leaves_healthy_pods_in_traffic():
    world = validated_world()
    real = world.latest_job()
    forged_job = copy.deepcopy(real)
    forged_job["metadata"]["name"] = "qwen-forged"
    forged_job["metadata"]["uid"] = "uid-forged-job"
    del forged_job["metadata"]["ownerReferences"]
    forged = f.observed_job(forged_job, created="2026-11-22T11:00:00Z", complete=True)
    world.jobs["qwen-forged"] = forged
    world.pods["qwen-forged-pod"] = f.validator_pod(
        forged, 1, f.failing_summary("forged"), name="qwen-forged-pod"
    )
    # A second forgery names the resource as its controller (its UID is readable by anyone).
    copycat = copy.deepcopy(forged)
    copycat["metadata"].update(
        name="qwen-copycat",
        uid="uid-copycat",
        ownerReferences=f.controller_ref(c.KIND, "qwen", f.DIS_UID),
    )
    world.jobs["qwen-copycat"] = copycat
    world.pods["qwen-copycat-pod"] = f.validator_pod(
        copycat, 1, f.failing_summary("forged"), name="qwen-copycat-pod"
    )
    p = world.step()
    assert p.pod_conditions == {} and p.consumed is None and p.delete_jobs == []
    assert world.gate("qwen-a")["status"] == "True" and world.gate("qwen-b")["status"] == "True"
    assert world.condition(T.DEGRADED)["status"] == "False"
    assert world.condition(T.READY)["status"] == "True"
    named = sorted(m.split()[1] for m in warnings(p))
    assert named == ["qwen-forged", "qwen-forged-pod"], warnings(p)
    assert world.step().events == []


def test_two_pods_claiming_our_job_could_not_validate():
    world = validating_world()
    job = world.latest_job()
    world.finish_job(0, f.summary())
    world.pods["impostor"] = f.validator_pod(job, 0, f.summary(), name="impostor")
    world.step()
    validated = world.condition(T.VALIDATED)
    assert (validated["status"], validated["reason"]) == ("Unknown", "CouldNotValidate")
    assert "2 pods claim validation Job" in validated["message"]
    assert world.condition(T.DEGRADED)["status"] == "False", "never a failure"
    assert world.gate("qwen-a")["reason"] == "CouldNotValidate", "never a pass"
    assert world.body["status"].get("fingerprint") is None


def test_a_pod_claiming_our_job_with_other_containers_is_not_read():
    world = validating_world()
    job = world.latest_job()
    containers = copy.deepcopy(job["spec"]["template"]["spec"]["containers"])
    containers[0]["command"] = ["sh", "-c", "echo fake"]
    world.pods["impostor"] = f.validator_pod(
        job, 0, f.summary(), name="impostor", containers=containers
    )
    p = world.step()
    assert p.consumed is None and p.pod_conditions == {}
    (message,) = warnings(p)
    assert "impostor" in message and "does not run its containers" in message


def test_a_recorded_job_that_is_gone_could_not_validate():
    world = validating_world()
    world.jobs.clear()
    world.step()
    validated = world.condition(T.VALIDATED)
    assert validated["reason"] == "CouldNotValidate" and "is gone" in validated["message"]


def test_a_job_created_by_this_process_is_awaited_and_adopted():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    p = world.plan()
    name = p.create_job["metadata"]["name"]
    # The status write after the create failed; the index shows the Job we made.
    world.jobs[name] = f.observed_job(p.create_job)
    uid = world.jobs[name]["metadata"]["uid"]
    adopted = plan(
        ResourceView.from_body(world.body),
        observed(world),
        CONFIG,
        world.now,
        memory=Memory(created_jobs={name: uid}),
    )
    assert adopted.create_job is None
    assert adopted.status.to_wire()["validationJob"] == {
        "name": name,
        "uid": uid,
        "revision": world.revision,
    }
    # Without that memory (another process) the plan does not trust it: it records no Job in
    # flight and asks to create the run under its own name; only the create may adopt the Job
    # there, if it is this run (Cluster.create_job), instead of making a second one.
    fresh = world.plan()
    assert fresh.create_job["metadata"]["name"] == name
    assert fresh.status.to_wire()["validationJob"]["uid"] == ""


def test_a_taken_job_name_is_avoided_and_reported():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    first = world.plan().create_job["metadata"]["name"]
    world.taken_job_names[first] = f"Job {first} holds the name of a validation Job"
    p = world.step()
    assert p.create_job["metadata"]["name"] != first
    assert warnings(p) == [f"Job {first} holds the name of a validation Job"]


def test_a_cancelled_job_is_deleted_by_its_uid():
    world = validating_world()
    running = world.latest_job()["metadata"]
    world.body["spec"]["model"]["revision"] = "e" * 40
    p = world.step()
    assert {w.name: w.uid for w in p.each(DeleteJob)} == {running["name"]: running["uid"]}
    assert "validationJob" not in world.body["status"]


def test_engine_pods_not_made_by_our_deployment_are_ignored():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.pods["forged"] = f.engine_pod("forged", world.revision, controller=[])
    other_rs = f.replicaset(uid="uid-other-rs", deployment_uid="uid-other-deployment", name="x")
    world.replicasets["x"] = other_rs
    world.pods["stray"] = f.engine_pod(
        "stray", world.revision, controller=f.controller_ref("ReplicaSet", "x", "uid-other-rs")
    )
    # A ReplicaSet the watch has not delivered yet: neither trusted nor reported.
    world.pods["early"] = f.engine_pod(
        "early", world.revision, controller=f.controller_ref("ReplicaSet", "y", "uid-unseen")
    )
    p = world.step()
    assert p.create_job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"
    assert sorted(m.split()[1] for m in warnings(p)) == ["forged", "stray"]
    assert all("not validated, not gated and not counted" in m for m in warnings(p))
    world.settle()
    world.finish_job(0, f.summary())
    world.settle()
    assert world.body["status"]["replicas"] == {"desired": 2, "running": 2, "validated": 2}
    for pod in ("forged", "stray", "early"):
        assert world.gate(pod) is None, pod


# ---- children are ours or untouched ----


def test_a_foreign_deployment_is_left_untouched_and_named():
    world = World(f.dis())
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "qwen", "uid": "uid-theirs", "labels": {"app": "theirs"}},
        "spec": {"replicas": 5},
    }
    world.children[("Deployment", "qwen")] = copy.deepcopy(foreign)
    p = world.step()
    assert [(o["kind"], o["metadata"]["name"]) for o in p.apply] == [
        ("Service", "qwen-pods"),
        ("Service", "qwen"),
        ("NetworkPolicy", "qwen-engine"),
    ]
    assert world.children[("Deployment", "qwen")] == foreign
    ready = world.condition(T.READY)
    assert (ready["status"], ready["reason"]) == ("False", "ChildConflict")
    assert "Deployment qwen exists and is not controlled by this" in ready["message"]
    assert world.condition(T.PROGRESSING)["reason"] == "ChildConflict"
    assert world.condition(T.DEGRADED)["status"] == "False"
    (event,) = [e for e in p.events if e.reason == "ChildConflict"]
    assert event.type == "Warning" and "Deployment qwen" in event.message
    again = world.step()
    assert writes(again) == 0 and again.events == []
    # It is removed: the Deployment is ours to make.
    del world.children[("Deployment", "qwen")]
    p = world.step()
    assert [o["kind"] for o in p.apply] == ["Deployment"]
    assert world.condition(T.READY)["reason"] == "WaitingForPods"


def test_a_foreign_child_found_by_a_create_is_left_untouched():
    world = validated_world()
    del world.children[("Service", "qwen")]
    world.foreign_children[("Service", "qwen")] = "Service qwen exists and is not controlled"
    p = world.step()
    assert p.apply == []
    assert world.condition(T.READY)["reason"] == "ChildConflict"
    assert [e.reason for e in p.events] == ["ChildConflict"]


def test_children_not_seen_as_ours_are_created_not_applied():
    world = validated_world()
    p = world.step()
    assert writes(p) == 0
    del world.children[("Service", "qwen-pods")]
    p = world.plan()
    assert [o["metadata"]["name"] for o in p.apply] == ["qwen-pods"]
    seen = {(w.kind, w.name): w.seen for w in p.each(Apply)}
    assert seen[("Service", "qwen-pods")] is False, "the executor creates it first"
    # The Deployment, ours and changed since: applied over what the index showed.
    world.children[("Deployment", "qwen")]["metadata"]["annotations"][c.ANNOTATION_APPLIED_HASH] = (
        "stale"
    )
    p = world.plan()
    applies = {(w.kind, w.name): w for w in p.each(Apply)}
    assert applies[("Deployment", "qwen")].seen is True
    assert applies[("Deployment", "qwen")].observed_hash == "stale"


def test_a_read_job_is_not_adopted_again_from_memory():
    world = validating_world()
    job = world.latest_job()["metadata"]
    world.finish_job(0, f.summary())
    world.step()
    again = plan(
        ResourceView.from_body(world.body),
        observed(world),
        CONFIG,
        world.now,
        memory=Memory(created_jobs={job["name"]: job["uid"]}, reported=world.reported),
    )
    assert writes(again) == 0 and again.consumed is None and again.events == []


def test_an_engine_pod_claiming_our_replicaset_with_other_containers_is_ignored():
    world = World(f.dis())
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    impostor = f.engine_pod("impostor", world.revision)
    impostor["spec"] = {"containers": [{"name": "engine", "image": "evil", "command": ["sh"]}]}
    world.pods["impostor"] = impostor
    p = world.step()
    assert p.create_job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"
    (message,) = warnings(p)
    assert message.startswith("pod impostor has the engine labels of qwen but claims ReplicaSet")
    assert "does not run its containers" in message


def test_network_policies_are_made_by_default_and_deleted_when_switched_off():
    world = World(f.dis())
    world.settle()
    # The baseline's policy only where spec.overhead runs a baseline.
    assert {k for k in world.children if k[0] == "NetworkPolicy"} == {
        ("NetworkPolicy", "qwen-engine")
    }
    # A namesake someone else controls is never deleted.
    world.children[("NetworkPolicy", "qwen-other")] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "qwen-other", "uid": "uid-theirs", "labels": {"app": "theirs"}},
    }
    world.body["spec"]["networkPolicy"] = {"enabled": False}
    world.body["metadata"]["generation"] = 2
    p = world.step()
    assert p.delete_policies == {"qwen-engine": "uid-qwen-engine"}
    assert {k for k in world.children if k[0] == "NetworkPolicy"} == {
        ("NetworkPolicy", "qwen-other")
    }
    assert world.step().delete_policies == {}


@pytest.mark.parametrize(
    ("engine", "status", "reason", "words"),
    [
        (
            {},
            "True",
            "AdminKey",
            "made in each pod when it starts and written nowhere the API serves",
        ),
        (
            {"adminApiKeySecret": {"name": "keys", "key": "admin"}},
            "True",
            "AdminKey",
            "from Secret keys key admin",
        ),
        ({"version": "0.5.7"}, "False", "Open", "anyone who reaches a pod can change"),
        (
            {"version": "0.5.7", "apiKeySecret": {"name": "keys", "key": "client"}},
            "False",
            "ClientKey",
            "every client holding the key in Secret keys",
        ),
    ],
)
def test_the_condition_says_who_can_open_the_admin_endpoints(engine, status, reason, words):
    world = World(f.dis(engine=engine))
    world.settle()
    admin = world.condition(T.ADMIN_ENDPOINTS_CLOSED)
    assert (admin["status"], admin["reason"]) == (status, reason)
    assert words in admin["message"]
    # It never holds Ready up, nor sets it.
    assert world.condition(T.READY)["reason"] != reason


def test_a_pod_whose_engine_restarted_after_its_verdict_is_validated_again_once():
    """The model_info liveness probe restarts a pod whose weights were swapped: the restarted
    process is validated again (against the recorded fingerprint), keeping its gate meanwhile
    as a periodic revalidation does; one run, not a loop."""
    world = validated_world()
    fingerprint = world.body["status"]["fingerprint"]
    assert world.step().create_job is None
    restarted = (world.now + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.pods["qwen-a"]["status"]["containerStatuses"] = [
        {"name": "engine", "restartCount": 1, "state": {"running": {"startedAt": restarted}}}
    ]
    world.now += timedelta(seconds=30)
    p = world.step()
    assert p.create_job is not None
    args = p.create_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--expected-fingerprint") + 1] == fingerprint
    assert world.gate("qwen-a")["status"] == "True"  # it serves while it is checked again
    world.settle()
    world.now += timedelta(seconds=30)
    world.finish_job(0, f.summary())
    world.settle()
    assert world.gate("qwen-a")["status"] == "True"
    jobs = len(world.jobs)
    world.now += timedelta(seconds=120)
    world.settle()
    assert len(world.jobs) == jobs, "a restart is validated once, not in a loop"
