"""GET /model_info held to --expect-model-path and --expect-weight-version, before and after the
suites, and a weight update during the run."""

from __future__ import annotations

import signal

import pytest

from detinfer.api import Verdict
from detinfer.validator.server_facts import (
    EngineFacts,
    Expectations,
    check_model,
    engine_facts,
    kept,
    model_changes,
)
from tests.support.fake_engine import FakeEngine
from tests.unit.test_validator import validate_cli  # noqa: F401 (a fixture)

EXPECT_MODEL = ["--expect-model-path", "fake/model", "--expect-weight-version", "default"]


@pytest.fixture(autouse=True)
def _python_sigpipe():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, previous)


# --- pure -------------------------------------------------------------------------------------


def test_only_the_named_fields_of_an_answer_are_kept_as_json_scalars():
    answer = {
        "model_path": "Qwen/Qwen3-8B",
        "weight_version": "v2",
        "tokenizer_path": "Qwen/Qwen3-8B",
        "api_key": "sk-1",
    }
    assert kept(answer, "/model_info") == {"model_path": "Qwen/Qwen3-8B", "weight_version": "v2"}
    server = {"version": {"nested": "sk-1"}, "tp_size": 2, "launch_command": "x --api-key sk-1"}
    assert kept(server, "/server_info") == {"tp_size": 2}
    assert kept(["model_path"], "/model_info") == {}
    assert kept({"model_path": "p" * 5000}, "/model_info") == {"model_path": "p" * 1024}


def test_the_model_facts_join_the_server_facts():
    facts = engine_facts({"tp_size": 1}, {"model_path": "Qwen/Qwen3-8B", "weight_version": 7})
    assert facts == EngineFacts(tensor_parallel_size=1, model_path="Qwen/Qwen3-8B")
    assert facts.to_server_facts().to_wire() == {"tensorParallelSize": 1}
    assert engine_facts(None, {"model_path": "m" * 100}).model_path == "m" * 64


def test_each_model_contradiction_names_the_field_the_expected_and_the_found_value():
    expected = Expectations(model_path="Qwen/Qwen3-8B", weight_version="v1")
    info = {"model_path": "Qwen/Qwen3-4B", "weight_version": "v2"}
    assert check_model(info, expected, " at the end of the run") == (
        [
            "model path at the end of the run: expected Qwen/Qwen3-8B, found Qwen/Qwen3-4B "
            "(/model_info model_path)",
            "weight version at the end of the run: expected v1, found v2 "
            "(/model_info weight_version)",
        ],
        [],
    )
    assert check_model({"model_path": "Qwen/Qwen3-8B", "weight_version": "v1"}, expected) == (
        [],
        [],
    )
    assert check_model({"model_path": "Qwen/Qwen3-8B"}, expected) == (
        [],
        ["weight version (expected v1; /model_info has no weight_version)"],
    )
    assert check_model({"error": "GET /model_info answered HTTP 500"}, expected)[1] == [
        "model path (expected Qwen/Qwen3-8B; GET /model_info answered HTTP 500)",
        "weight version (expected v1; GET /model_info answered HTTP 500)",
    ]
    assert check_model({}, Expectations()) == ([], [])


def test_a_change_between_two_readings_is_named():
    first = {"model_path": "a", "weight_version": "v1"}
    assert model_changes(first, dict(first)) == []
    assert model_changes(first, {"model_path": "a", "weight_version": "v2"}) == [
        "weight version changed during the run: v1 at the start, v2 at the end "
        "(/model_info weight_version)"
    ]
    assert model_changes(first, {"model_path": "a"}) == [
        "weight version changed during the run: v1 at the start, None at the end "
        "(/model_info weight_version)"
    ]
    assert model_changes(first, {"error": "GET /model_info answered HTTP 500"}) == []


# --- through the command -------------------------------------------------------------------------


def test_the_expected_model_passes_and_is_in_the_report(validate_cli):  # noqa: F811
    with FakeEngine() as a, FakeEngine() as b:
        run = validate_cli(*EXPECT_MODEL, "--suites", "Single", endpoints=[("a", a), ("b", b)])
    assert run.rc == 0, run.out
    assert run.report["server"]["modelPath"] == "fake/model"
    assert run.report["server"]["weightVersion"] == "default"
    assert run.report["options"]["expectModelPath"] == "fake/model"
    assert run.report["options"]["expectWeightVersion"] == "default"
    endpoint = run.report["endpoints"][0]
    assert endpoint["server"]["modelInfoAtEnd"] == {
        "model_path": "fake/model",
        "weight_version": "default",
    }
    assert endpoint["mismatches"] == [] and endpoint["unchecked"] == []


@pytest.mark.parametrize(
    ("model_info", "words"),
    [
        (
            {"model_path": "other/model"},
            "model path: expected fake/model, found other/model (/model_info model_path)",
        ),
        (
            {"weight_version": "step-200"},
            "weight version: expected default, found step-200 (/model_info weight_version)",
        ),
    ],
)
def test_another_model_fails_before_any_suite(validate_cli, model_info, words):  # noqa: F811
    with FakeEngine(model_info=model_info) as bad, FakeEngine() as good:
        run = validate_cli(*EXPECT_MODEL, endpoints=[("pod-a", bad), ("pod-b", good)])
        assert bad.generate_requests == good.generate_requests == 0
    assert run.rc == 1, run.out
    assert run.summary.verdict == Verdict.SERVER_MISMATCH
    assert run.summary.reason == f"server mismatch: pod-a: {words}; the suites did not run"
    assert run.summary.failed_endpoints == ["pod-a", "pod-b"]
    assert run.report["endpoints"][0]["mismatches"] == [words]


def test_the_old_name_is_read_where_model_info_answers_404(validate_cli):  # noqa: F811
    with FakeEngine(info_names="old", model_info={"weight_version": "v9"}) as engine:
        run = validate_cli(*EXPECT_MODEL, "--suites", "none", endpoints=[("pod-a", engine)])
    assert run.rc == 1
    assert "weight version: expected default, found v9" in run.summary.reason


def test_a_weight_update_during_the_run_is_a_server_mismatch(validate_cli):  # noqa: F811
    swap = (3, {"weight_version": "step-200"})
    with FakeEngine(swap_model_info=swap) as swapped, FakeEngine() as steady:
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", swapped), ("pod-b", steady)])
        assert swapped.generate_requests > 3  # the suites ran
    assert run.rc == 1, run.out
    assert run.summary.verdict == Verdict.SERVER_MISMATCH
    assert run.summary.reason == (
        "server mismatch: pod-a: weight version changed during the run: default at the start, "
        "step-200 at the end (/model_info weight_version); found after the suites, whose "
        "outputs are no evidence"
    )
    assert run.summary.fingerprint is None
    assert run.summary.failed_endpoints == ["pod-a", "pod-b"]
    assert run.report["endpoints"][1]["mismatches"] == []


def test_a_model_swapped_away_from_the_expected_one_is_named_at_both_checks(validate_cli):  # noqa: F811
    swap = (3, {"model_path": "other/model"})
    with FakeEngine(swap_model_info=swap) as engine:
        run = validate_cli(*EXPECT_MODEL, "--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 1
    assert run.report["endpoints"][0]["mismatches"] == [
        "model path at the end of the run: expected fake/model, found other/model "
        "(/model_info model_path)",
        "model path changed during the run: fake/model at the start, other/model at the end "
        "(/model_info model_path)",
    ]


def test_a_field_model_info_lacks_is_noted_not_failed(validate_cli):  # noqa: F811
    with FakeEngine(model_info={"weight_version": None}) as engine:
        run = validate_cli(*EXPECT_MODEL, "--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    noted = "weight version (expected default; /model_info has no weight_version)"
    assert run.report["endpoints"][0]["unchecked"] == [noted]
    assert f"pod-a: not confirmed: {noted}" in run.out


def test_without_model_info_the_expectations_are_noted(validate_cli):  # noqa: F811
    with FakeEngine(info_names="none") as engine:
        run = validate_cli(
            "--expect-model-path", "fake/model", "--suites", "none", endpoints=[("e", engine)]
        )
    assert run.rc == 0, run.out
    assert run.report["endpoints"][0]["unchecked"] == [
        "model path (expected fake/model; GET /model_info answered HTTP 404, "
        "GET /get_model_info answered HTTP 404)"
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--protocol", "openai", "--expect-model-path", "fake/model"],
            "--expect-*: only the sglang protocol reads GET /server_info and /model_info",
        ),
        (["--expect-weight-version", " "], "--expect-weight-version ' ': give the value"),
    ],
)
def test_bad_model_expectations_are_refused_naming_the_option(validate_cli, args, words):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(*args, endpoints=[("pod-a", engine)])
    assert run.rc == 2 and words in run.summary.reason
