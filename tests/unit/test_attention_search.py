"""engine.attentionBackend Auto: the candidates, the schema's rules, and the search through the
planner: each backend served in turn, validated, measured, and the cheapest that passed chosen.

The planner runs against test_overhead_operator's in-memory World (the validation Job, the
baseline and the benchmark Job, each created and finished by the test)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from detinfer.api.resource import SpecError, parse_dis
from detinfer.api.spec import AttentionBackend as A
from detinfer.controller.search import trial_limit_seconds
from detinfer.engines import kinds
from tests.support import factories as f
from tests.unit.test_overhead_operator import (
    ENABLED,
    OverheadWorld,
    _args,
    overhead_summary,
    reference,
)
from tests.unit.test_reconcile import CONFIG


def auto_candidates(spec: Any) -> tuple[A, ...]:
    return kinds.of(spec).auto_candidates(spec)


def sglang(product: str | None, version: str = "0.5.23", **engine: Any) -> Any:
    return parse_dis(
        f.dis(
            engine={"version": version, "attentionBackend": "Auto", **engine},
            resources={"gpusPerReplica": 1, "gpuProduct": product},
            overhead=ENABLED,
        )
    ).spec


@pytest.mark.parametrize(
    ("product", "version", "expected"),
    [
        ("NVIDIA-H200", "0.5.23", [A.FA3, A.FLASHINFER, A.TRITON]),
        ("NVIDIA-H100-80GB-HBM3", "0.5.23", [A.FA3, A.FLASHINFER, A.TRITON]),
        ("NVIDIA-B200", "0.5.23", [A.FA4, A.FLASHINFER, A.TRITON]),
        ("NVIDIA-B200", "0.5.15", [A.FLASHINFER, A.TRITON]),  # fa4 from 0.5.16
        ("NVIDIA-A100-SXM4-80GB", "0.5.23", [A.FLASHINFER, A.TRITON]),
        ("NVIDIA-H2000", "0.5.23", [A.FLASHINFER, A.TRITON]),  # not an H20
        (None, "0.5.23", [A.FLASHINFER, A.TRITON]),
    ],
)
def test_sglang_candidates_follow_the_gpu_product(product, version, expected):
    assert list(auto_candidates(sglang(product, version))) == expected


def test_reference_candidates_are_its_three_backends():
    spec = parse_dis(_auto_reference()).spec
    assert list(auto_candidates(spec)) == [A.TILED, A.TREE, A.SPLIT_KV]


def _auto_reference(**overhead: Any) -> dict[str, Any]:
    body = reference(overhead={**ENABLED, **overhead})
    body["spec"]["engine"]["attentionBackend"] = "Auto"
    return body


def test_auto_needs_the_overhead_measurement():
    body = _auto_reference()
    body["spec"]["overhead"]["enabled"] = False
    with pytest.raises(SpecError) as err:
        parse_dis(body)
    assert "spec.overhead.enabled" in str(err.value) and "Auto" in str(err.value)


def test_sglang_refuses_the_reference_engines_backends():
    with pytest.raises(SpecError) as err:
        parse_dis(f.dis(engine={"attentionBackend": "Tree"}))
    assert "spec.engine.attentionBackend" in str(err.value) and "Tree" in str(err.value)


def test_a_reference_backend_is_passed_and_expected():
    body = reference()
    body["spec"]["engine"]["attentionBackend"] = "Tree"
    world = OverheadWorld(body)
    world.settle()
    deployment = world.children[("Deployment", "qwen")]
    args = _args(deployment)
    assert args[args.index("--attention-backend") + 1] == "tree"
    world.add_pods("qwen-a", "qwen-b")
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    world.settle()
    job_args = _args(world.latest_job())
    assert job_args[job_args.index("--expect-attention-backend") + 1] == "tree"


def test_the_default_reference_backend_is_tiled_and_left_out_of_the_args():
    world = OverheadWorld(reference())
    world.settle()
    assert "--attention-backend" not in _args(world.children[("Deployment", "qwen")])
    world.add_pods("qwen-a", "qwen-b")
    world.now += timedelta(seconds=CONFIG.gather_seconds)
    world.settle()
    job_args = _args(world.latest_job())
    assert job_args[job_args.index("--expect-attention-backend") + 1] == "tiled"


class SearchWorld(OverheadWorld):
    def serving_backend(self) -> str:
        args = _args(self.children[("Deployment", "qwen")])
        return (
            args[args.index("--attention-backend") + 1]
            if "--attention-backend" in args
            else "tiled"
        )

    def search(self) -> dict[str, Any]:
        return self.body["status"]["attentionSearch"]

    def validate(self, prefix: str, verdict: str = "Deterministic") -> None:
        """New pods of the current revision, and their validation Job finished with `verdict`."""
        self.add_pods(f"{prefix}-a", f"{prefix}-b")
        self.now += timedelta(seconds=CONFIG.gather_seconds)
        self.settle()
        if verdict == "Deterministic":
            self.finish_job(0, f.summary())
        else:
            self.finish_job(1, f.summary(verdict, reason=f"{prefix} diverges"))
        self.settle()

    def measure(self, percent: float) -> None:
        self.pods.pop("qwen-baseline-7c9f-x", None)
        self.add_baseline_pod(ready=True)
        self.settle()
        self.finish_bench(0, overhead_summary(percent=percent))
        self.settle()


def test_the_search_tries_each_backend_and_serves_the_cheapest_that_passed():
    world = SearchWorld(_auto_reference())
    world.settle()
    search = world.search()
    assert search["candidates"] == ["Tiled", "Tree", "SplitKV"]
    assert search["trying"] == "Tiled" and world.serving_backend() == "tiled"
    first_revision = world.revision

    world.validate("tiled")
    assert world.search()["trying"] == "Tiled"  # passed, the overhead not yet measured
    world.measure(40.0)
    assert world.search()["trying"] == "Tree" and world.serving_backend() == "tree"
    assert world.revision != first_revision

    world.validate("tree")
    world.measure(25.0)
    assert world.search()["trying"] == "SplitKV" and world.serving_backend() == "split_kv"

    world.validate("split", "NotDeterministic")
    search = world.search()
    assert "trying" not in search and search["chosen"] == "Tree"
    assert [(t["backend"], t["verdict"], t.get("overheadPercent")) for t in search["trials"]] == [
        ("Tiled", "Deterministic", 40.0),
        ("Tree", "Deterministic", 25.0),
        ("SplitKV", "NotDeterministic", None),
    ]
    assert world.serving_backend() == "tree"
    reasons = world.reasons()
    assert reasons.count("AttentionTrialStarted") == 3
    assert reasons.count("AttentionTrialFinished") == 3
    assert reasons.count("AttentionBackendChosen") == 1
    chosen = next(e for e in world.events if e.reason == "AttentionBackendChosen")
    assert "Tree" in chosen.message and "+25.0%" in chosen.message

    # Settled: the search does not run again for this spec, however much later.
    world.now += timedelta(days=3)
    world.settle()
    assert (
        world.search()["chosen"] == "Tree" and world.reasons().count("AttentionTrialStarted") == 3
    )

    # A new revision of the spec (another model revision) searches again.
    world.body["spec"]["model"]["revision"] = "b" * 40
    world.body["metadata"]["generation"] += 1
    world.settle()
    search = world.search()
    assert search["trying"] == "Tiled" and search["trials"] == [] and "chosen" not in search


def test_a_trial_with_no_verdict_in_time_could_not_test_and_is_never_chosen():
    world = SearchWorld(_auto_reference())
    world.settle()
    limit = trial_limit_seconds(parse_dis(world.body).spec)
    world.now += timedelta(seconds=limit + 1)  # tiled's pods never came up
    world.settle()
    search = world.search()
    assert search["trials"][0]["backend"] == "Tiled"
    assert search["trials"][0]["verdict"] == "CouldNotTest"
    assert "within" in search["trials"][0]["message"]
    assert search["trying"] == "Tree"
    world.validate("tree")
    world.measure(90.0)
    world.validate("split", "NotDeterministic")
    assert world.search()["chosen"] == "Tree"  # the only one that passed, however dear


def test_no_backend_passing_chooses_none_and_says_so():
    world = SearchWorld(_auto_reference())
    world.settle()
    world.validate("tiled", "NotDeterministic")
    world.validate("tree", "NotDeterministic")
    world.validate("split", "NotDeterministic")
    search = world.search()
    assert "chosen" not in search and "no candidate passed" in search["message"]
    chosen = next(e for e in world.events if e.reason == "AttentionBackendChosen")
    assert chosen.type == "Warning"


def test_leaving_auto_drops_the_search():
    world = SearchWorld(_auto_reference())
    world.settle()
    assert "attentionSearch" in world.body["status"]
    world.body["spec"]["engine"]["attentionBackend"] = "Tree"
    world.settle()
    assert "attentionSearch" not in world.body["status"]
    assert world.serving_backend() == "tree"


def test_a_choice_that_already_serves_is_validated_again_and_ends_ready():
    """Issue #30: Tiled +40%, Tree +25%, SplitKV fails: Tree is chosen, and its revision is the
    one still serving (its pods passed and kept their gates through SplitKV's trial), so no new
    pods come and no Job was due. The status recorded SplitKV's run, so Validated stayed
    Unknown and Ready False for good. Now the chosen revision's pods are validated again, and
    the resource ends Ready on a run of what serves."""
    world = SearchWorld(_auto_reference())
    world.settle()
    world.validate("tiled")
    world.measure(40.0)
    world.validate("tree")
    world.measure(25.0)
    world.validate("split", "NotDeterministic")
    assert world.search()["chosen"] == "Tree" and world.serving_backend() == "tree"
    tree_revision = world.revision
    assert world.body["status"]["validation"]["revision"] != tree_revision  # SplitKV's run
    job = world.latest_job()
    assert _args(job)[_args(job).index("--expect-attention-backend") + 1] == "tree"
    endpoints = [a for a in _args(job) if a.startswith("tree-")]
    assert sorted(e.split("=")[0] for e in endpoints) == ["tree-a", "tree-b"]
    world.finish_job(0, f.summary())
    world.settle()
    assert world.body["status"]["validation"]["revision"] == tree_revision
    assert world.condition("Validated")["status"] == "True"
    assert world.condition("Ready")["status"] == "True", world.condition("Ready")
    # Settled: no further run for the same revision.
    jobs = len(world.jobs)
    world.now += timedelta(minutes=30)
    world.settle()
    assert len(world.jobs) == jobs
