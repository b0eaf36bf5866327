"""The operator's overhead measurement (spec.overhead): the baseline Deployment and benchmark Job
builders, the planner's decisions over the baseline's whole life, the status and the metrics.

The planner runs against test_reconcile's in-memory World, extended with what the measurement
writes (the benchmark Job, the baseline's deletion) and the ReplicaSet the Deployment controller
makes for the baseline.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from detinfer import metrics
from detinfer.api import constants as c
from detinfer.api.constants import ConditionType as T
from detinfer.api.resource import parse_dis, parse_status
from detinfer.api.timestamps import format_time
from detinfer.builders import (
    Endpoint,
    RevisionContext,
    build_baseline_deployment,
    build_bench_job,
    build_client_service,
    build_deployment,
    build_headless_service,
)
from detinfer.controller.observed import ResourceView
from detinfer.controller.overhead import RETRY_SECONDS
from detinfer.controller.reconcile import plan
from detinfer.controller.trust import Memory
from tests.support import factories as f
from tests.unit.test_reconcile import CONFIG, World, observed

BASELINE_UID = "d0000000-0000-0000-0000-0000000000b1"
BASELINE_RS_UID = "e0000000-0000-0000-0000-0000000000b1"
WORKLOAD = {"concurrency": [2], "requests": 4, "inputTokens": 8, "outputTokens": 4, "rounds": 2}
ENABLED = {"enabled": True, "workload": WORKLOAD}


def reference(**spec: Any) -> dict[str, Any]:
    return f.dis(
        engine={"kind": "Reference", "image": f"detinfer-engine@{f.DIGEST}"},
        resources={"gpusPerReplica": 0, "gpuProduct": None},
        **spec,
    )


# ---- builders ----


def _args(obj: dict[str, Any]) -> list[str]:
    return obj["spec"]["template"]["spec"]["containers"][0]["args"]


def _env(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_sglang_baseline_is_the_engine_without_determinism():
    dis = parse_dis(
        f.dis(
            engine={"tensorParallelSize": 2, "attentionBackend": "Triton"},
            resources={"gpusPerReplica": 2},
        )
    )
    engine, baseline = build_deployment(dis), build_baseline_deployment(dis)
    det_args, base_args = _args(engine), _args(baseline)
    assert "--enable-deterministic-inference" in det_args
    assert "--enable-deterministic-inference" not in base_args
    assert "--attention-backend" in det_args and "--attention-backend" not in base_args
    # Everything else is the same pod: image, model, revision, TP size, GPUs, affinity, probes.
    assert [
        a
        for a in det_args
        if a not in ("--enable-deterministic-inference", "--attention-backend", "triton")
    ] == base_args
    det_c = engine["spec"]["template"]["spec"]["containers"][0]
    base_c = baseline["spec"]["template"]["spec"]["containers"][0]
    for field in ("image", "command", "resources", "readinessProbe", "startupProbe", "ports"):
        assert det_c[field] == base_c[field], field
    assert base_args[base_args.index("--tp-size") + 1] == "2"
    assert base_args[base_args.index("--revision") + 1] == f.REVISION
    det_pod, base_pod = engine["spec"]["template"]["spec"], baseline["spec"]["template"]["spec"]
    assert det_pod["affinity"] == base_pod["affinity"]
    assert base_pod["automountServiceAccountToken"] is False
    # The batch-invariant numerics are determinism's; the baseline runs SGLang's defaults.
    assert any(k.startswith("SGLANG_FLASHINFER") for k in _env(engine))
    assert not any(k.startswith("SGLANG_FLASHINFER") for k in _env(baseline))
    # One replica, never gated, owned by the resource as its controller.
    assert baseline["spec"]["replicas"] == 1
    assert "readinessGates" not in base_pod and "readinessGates" in det_pod
    assert baseline["metadata"]["name"] == "qwen-baseline"
    (ref,) = baseline["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == (c.KIND, f.DIS_UID, True)
    assert baseline["spec"]["strategy"] == {"type": "Recreate"}


def test_reference_baseline_runs_the_default_mode():
    dis = parse_dis(reference())
    args = _args(build_baseline_deployment(dis))
    assert "--enable-deterministic-inference" not in args
    assert args[:2] == ["--model-path", dis.spec.model.path]
    assert "--enable-deterministic-inference" in _args(build_deployment(dis))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_no_service_of_the_operator_selects_the_baseline_pods():
    context = RevisionContext.of(parse_dis(f.dis()))
    baseline_pod = build_baseline_deployment(context)["spec"]["template"]["metadata"]["labels"]
    engine_pod = build_deployment(context)["spec"]["template"]["metadata"]["labels"]
    services = [
        build_client_service(context, context.revision),
        build_headless_service(context),
    ]
    for service in services:
        selector = service["spec"]["selector"]
        assert _selects(selector, engine_pod)  # the check can say yes
        assert not _selects(selector, baseline_pod), service["metadata"]["name"]
    # Nor does the engine Deployment claim them (its selector is immutable).
    engine_selector = build_deployment(context)["spec"]["selector"]["matchLabels"]
    assert not _selects(engine_selector, baseline_pod)


def test_bench_job_runs_detinfer_bench_without_api_access():
    dis = parse_dis(f.dis(overhead=ENABLED))
    job = build_bench_job(
        dis,
        Endpoint("qwen-a", "10.0.0.1"),
        Endpoint("qwen-baseline-x", "10.0.0.9"),
        "qwen-b1",
        CONFIG,
    )
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == CONFIG.validator_image
    assert container["command"] == ["detinfer", "bench"]
    assert container["args"] == [
        "--deterministic", "http://10.0.0.1:30000",
        "--baseline", "http://10.0.0.9:30000",
        "--concurrency", "2", "--requests", "4", "--input-tokens", "8",
        "--output-tokens", "4", "--rounds", "2", "--seed", "0",
        "--summary-file", c.TERMINATION_MESSAGE_PATH,
    ]  # fmt: skip
    assert container["terminationMessagePath"] == c.TERMINATION_MESSAGE_PATH
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 3600)
    assert spec["ttlSecondsAfterFinished"] == CONFIG.job_ttl_seconds
    assert job["spec"]["template"]["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_BENCH


# ---- the planner ----


def overhead_summary(measured: bool = True, percent: float = 25.0) -> str:
    return f.overhead_summary(WORKLOAD, measured, percent)


class OverheadWorld(World):
    """World, plus the benchmark Job's create, the baseline's delete, and its ReplicaSet; it
    remembers the Jobs it created, as the operator process does (trust.Memory.created_jobs)."""

    def __init__(self, body):
        super().__init__(body)
        self.created: dict[str, str] = {}

    def plan(self):
        return plan(
            ResourceView.from_body(self.body),
            observed(self),
            CONFIG,
            self.now,
            memory=Memory(
                created_jobs=dict(self.created),
                foreign_children=self.foreign_children,
                taken_job_names=self.taken_job_names,
                reported=self.reported,
            ),
        )

    def made_job(self, create):
        if create.purpose == "validation":
            return super().made_job(create)
        job = f.observed_job(create.body, created="2026-11-22T11:00:00Z")
        self.created[create.name] = job["metadata"]["uid"]
        return job

    def step(self):
        before = set(self.children)
        p = super().step()
        key = ("Deployment", "qwen-baseline")
        if key in self.children and key not in before:
            self.children[key]["metadata"]["uid"] = BASELINE_UID
            self.children[key]["metadata"]["creationTimestamp"] = format_time(self.now)
            rs = f.replicaset(BASELINE_RS_UID, BASELINE_UID, "qwen-baseline-7c9f")
            self.replicasets[rs["metadata"]["name"]] = rs
        for name in p.delete_deployments:
            self.children.pop(("Deployment", name), None)
            self.replicasets.pop("qwen-baseline-7c9f", None)
            self.pods.pop("qwen-baseline-7c9f-x", None)
        self.last = p
        return p

    def add_baseline_pod(self, ready: bool = True) -> None:
        pod = f.engine_pod(
            "qwen-baseline-7c9f-x",
            self.revision,
            ip="10.0.0.9",
            ready=ready,
            controller=f.controller_ref("ReplicaSet", "qwen-baseline-7c9f", BASELINE_RS_UID),
        )
        pod["metadata"]["labels"][c.LABEL_COMPONENT] = c.COMPONENT_BASELINE
        self.pods[pod["metadata"]["name"]] = pod

    def bench_job(self) -> dict[str, Any]:
        (job,) = [
            j
            for j in self.jobs.values()
            if j["spec"]["template"]["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_BENCH
            and j["metadata"].get("ownerReferences")
        ]
        return job

    def finish_bench(self, exit_code: int, message: str | None) -> str:
        job = self.bench_job()
        name = job["metadata"]["name"]
        self.pods[name + "-pod"] = f.validator_pod(job, exit_code, message)
        self.jobs[name] = f.observed_job(
            job, created=job["metadata"]["creationTimestamp"], complete=exit_code == 0,
            failed=None if exit_code == 0 else "BackoffLimitExceeded: failed",
        )  # fmt: skip
        return name

    def baseline(self) -> dict[str, Any] | None:
        return self.children.get(("Deployment", "qwen-baseline"))

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def ready_world(overhead: dict[str, Any] | None = ENABLED, **spec: Any) -> OverheadWorld:
    world = OverheadWorld(reference(overhead=overhead, **spec))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    world.settle()
    world.finish_job(0, f.summary())
    world.settle()
    return world


def test_no_baseline_before_the_revision_is_ready():
    world = OverheadWorld(reference(overhead=ENABLED))
    world.settle()
    world.add_pods("qwen-a", "qwen-b")
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    world.settle()  # validating: the Job runs
    assert world.condition(T.READY)["status"] == "False"
    assert world.baseline() is None
    assert not [r for r in world.reasons() if r.startswith("Overhead")]


def test_disabled_by_default_no_baseline_ever():
    world = ready_world(overhead=None)
    assert world.condition(T.READY)["status"] == "True"
    assert world.baseline() is None and "overhead" not in world.body["status"]


def test_baseline_then_job_then_measured_then_both_deleted():
    world = ready_world()
    # Ready first, then the baseline: serving did not wait for it.
    assert world.condition(T.READY)["status"] == "True"
    baseline = world.baseline()
    assert baseline is not None
    assert "OverheadBaselineStarted" in world.reasons()
    assert "--enable-deterministic-inference" not in _args(baseline)
    # Not ready yet: no Job, however often the planner runs.
    world.add_baseline_pod(ready=False)
    world.settle()
    assert world.last.create_bench_job is None and "overheadJob" not in world.body["status"]
    world.add_baseline_pod(ready=True)
    p = world.step()
    assert p.create_bench_job is not None
    job = world.bench_job()
    args = _args(job)
    det = world.pods["qwen-a"]["status"]["podIP"]
    assert args[args.index("--deterministic") + 1] == f"http://{det}:30000"
    assert args[args.index("--baseline") + 1] == "http://10.0.0.9:30000"
    record = world.body["status"]["overheadJob"]
    assert record["uid"] == job["metadata"]["uid"]
    assert (record["deterministicPod"], record["baselinePod"]) == ("qwen-a", "qwen-baseline-7c9f-x")
    assert world.settle() is not None and world.last.create_bench_job is None  # one Job only
    world.finish_bench(0, overhead_summary(percent=25.0))
    p = world.step()
    status = world.body["status"]
    m = status["overhead"]
    assert m["measured"] is True and m["headlinePercent"] == 25.0 and m["headlineConcurrency"] == 2
    assert m["revision"] == status["revision"]
    assert (m["deterministicPod"], m["baselinePod"]) == ("qwen-a", "qwen-baseline-7c9f-x")
    assert m["levels"][0]["baseline"]["tokensPerSecond"] == 100.0
    assert m["workload"]["concurrency"] == [2]
    assert "overheadJob" not in status
    assert p.delete_deployments == {"qwen-baseline": BASELINE_UID}
    assert job["metadata"]["name"] in p.delete_jobs
    assert "OverheadMeasured" in [e.reason for e in p.events]
    assert world.baseline() is None
    # Settled: not measured again for this revision, however much later.
    world.now += timedelta(days=3)
    assert world.settle() is not None
    assert world.baseline() is None and world.last.create_bench_job is None
    assert world.condition(T.READY)["status"] == "True"


def test_a_new_revision_is_measured_again():
    world = ready_world()
    world.add_baseline_pod()
    world.settle()
    world.finish_bench(0, overhead_summary())
    world.settle()
    first = world.body["status"]["overhead"]["revision"]
    world.body["spec"]["engine"]["samplingSeed"] = 7  # a new revision
    world.body["metadata"]["generation"] = 2
    world.settle()
    assert world.revision != first
    assert world.baseline() is None  # the new revision is not Ready yet
    world.pods.clear()
    world.add_pods("qwen-c", "qwen-d")
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    world.settle()
    world.finish_job(0, f.summary())
    world.settle()
    assert world.condition(T.READY)["status"] == "True"
    assert world.baseline() is not None


def test_the_schedule_measures_again():
    world = ready_world(overhead={**ENABLED, "remeasureEverySeconds": 7200})
    world.add_baseline_pod()
    world.settle()
    world.finish_bench(0, overhead_summary())
    world.settle()
    assert world.baseline() is None
    world.now += timedelta(seconds=3600)
    world.settle()
    assert world.baseline() is None
    world.now += timedelta(seconds=3600)
    world.settle()
    assert world.baseline() is not None


@pytest.mark.parametrize(
    ("exit_code", "message", "words"),
    [
        (2, overhead_summary(measured=False), "could not measure: baseline: connection refused"),
        (1, "Traceback (most recent call last): ...", "benchmark qwen-"),
        (0, None, "is not a valid"),
        (2, overhead_summary(measured=True), "exited 2 but its summary says measured=true"),
    ],
)
def test_could_not_measure_gives_no_figure(exit_code, message, words):
    world = ready_world()
    world.add_baseline_pod()
    world.settle()
    world.finish_bench(exit_code, message)
    p = world.step()
    m = world.body["status"]["overhead"]
    assert m["measured"] is False
    assert "headlinePercent" not in m and m.get("levels", []) == []
    assert words in m["message"] or (words == "is not a valid" and m["message"]), m["message"]
    (event,) = [e for e in p.events if e.reason == "OverheadNotMeasured"]
    assert event.type == "Warning"
    assert p.delete_deployments == {"qwen-baseline": BASELINE_UID}
    # Tried again after an hour, not at once.
    world.settle()
    assert world.baseline() is None
    world.now += timedelta(seconds=RETRY_SECONDS)
    world.settle()
    assert world.baseline() is not None


def test_a_job_the_operator_did_not_create_is_never_evidence():
    world = ready_world()
    world.add_baseline_pod()
    world.settle()
    # Someone copies our benchmark Job (labels, template) under another name and UID, not
    # controlled by the resource, and gives its pod a glowing summary.
    forged = copy.deepcopy(world.bench_job())
    forged["metadata"].update(name="qwen-forged", uid="uid-forged", ownerReferences=[])
    world.jobs["qwen-forged"] = forged
    world.pods["qwen-forged-pod"] = f.validator_pod(forged, 0, overhead_summary(percent=-90.0))
    world.settle()
    assert "overhead" not in world.body["status"]
    assert "UntrustedObject" in world.reasons()
    # Our own Job's result is the one read.
    world.finish_bench(0, overhead_summary(percent=30.0))
    world.settle()
    assert world.body["status"]["overhead"]["headlinePercent"] == 30.0


def test_a_baseline_pod_our_deployment_did_not_make_is_not_measured():
    world = ready_world()
    pod = f.engine_pod("impostor", world.revision, ip="10.0.0.66", controller=[])
    pod["metadata"]["labels"][c.LABEL_COMPONENT] = c.COMPONENT_BASELINE
    world.pods["impostor"] = pod
    world.settle()
    assert world.last.create_bench_job is None and "overheadJob" not in world.body["status"]


@pytest.mark.parametrize("pod", [None, "unready"])
def test_a_baseline_with_no_ready_pod_in_time_could_not_measure_and_goes(pod):
    world = ready_world()
    if pod:
        world.add_baseline_pod(ready=False)
    timeout = world.body["spec"]["overhead"].get("timeoutSeconds", 3600)
    world.now += timedelta(seconds=timeout - 1)
    world.settle()
    assert world.baseline() is not None and "overhead" not in world.body["status"]
    world.now += timedelta(seconds=1)
    p = world.step()
    assert p.delete_deployments == {"qwen-baseline": BASELINE_UID}
    m = world.body["status"]["overhead"]
    assert m["measured"] is False and "headlinePercent" not in m
    assert "qwen-baseline had no ready pod" in m["message"]
    assert "spec.overhead.timeoutSeconds" in m["message"]
    warnings = [e for e in p.events if e.reason == "OverheadNotMeasured"]
    assert warnings and warnings[0].type == "Warning"
    # No new baseline until the retry is due; then one again.
    world.now += timedelta(seconds=RETRY_SECONDS - 1)
    world.settle()
    assert world.baseline() is None
    world.now += timedelta(seconds=1)
    world.settle()
    assert world.baseline() is not None


def test_disabling_cancels_and_deletes_the_baseline():
    world = ready_world()
    world.add_baseline_pod()
    world.settle()
    assert "overheadJob" in world.body["status"]
    job = world.bench_job()["metadata"]["name"]
    world.body["spec"]["overhead"]["enabled"] = False
    p = world.step()
    assert p.delete_deployments == {"qwen-baseline": BASELINE_UID}
    assert job in p.delete_jobs and job not in world.jobs
    assert "OverheadNotMeasured" in [e.reason for e in p.events]
    assert "overheadJob" not in world.body["status"]
    assert world.condition(T.READY)["status"] == "True"


# ---- status and metrics ----


def test_a_status_of_an_older_operator_keeps_all_but_its_overhead():
    raw = {
        "revision": "r",
        "fingerprint": f.FINGERPRINT,
        "overhead": {"latencyP50Milliseconds": 120, "tokensPerSecond": 812},
    }
    status = parse_status(raw)
    assert status.fingerprint == f.FINGERPRINT and status.overhead is None


def test_overhead_metrics_per_level_and_side():
    world = ready_world()
    world.add_baseline_pod()
    world.settle()
    world.finish_bench(0, overhead_summary(percent=25.0))
    world.settle()
    status = parse_status(world.body["status"])
    metrics.observe("ml", "ovh", status, None)
    text = generate_latest(metrics.REGISTRY).decode()
    key = 'concurrency="2",name="ovh",namespace="ml"'
    assert f"detinfer_overhead_throughput_percent{{{key}}} 25.0" in text
    assert f'detinfer_overhead_tokens_per_second{{{key},side="baseline"}} 100.0' in text
    assert f'detinfer_overhead_tokens_per_second{{{key},side="deterministic"}} 80.0' in text
    assert f'detinfer_overhead_e2e_latency_p50_seconds{{{key},side="deterministic"}} 0.1' in text
    assert 'detinfer_overhead_headline_percent{name="ovh",namespace="ml"} 25.0' in text
    assert 'detinfer_overhead_measured{name="ovh",namespace="ml"} 1.0' in text
    # A later measurement that could not measure leaves no stale figure behind.
    failed = status.overhead.model_copy(update={"measured": False, "levels": [], "message": "x"})
    metrics.observe("ml", "ovh", status.model_copy(update={"overhead": failed}), None)
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'detinfer_overhead_measured{name="ovh",namespace="ml"} 0.0' in text
    assert "detinfer_overhead_throughput_percent{" + key not in text
    assert 'detinfer_overhead_headline_percent{name="ovh"' not in text
    metrics.forget("ml", "ovh")
    assert 'name="ovh"' not in generate_latest(metrics.REGISTRY).decode()
