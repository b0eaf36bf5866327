"""What the validator reads from GET /server_info, and a server that contradicts the spec."""

from __future__ import annotations

import signal

import pytest

from detinfer.api import SuiteOutcome, Verdict
from detinfer.api.status import ServerFacts
from detinfer.validator.server_facts import Expectations, check, common_facts, facts_of
from tests.support.fake_engine import FakeEngine
from tests.unit.test_validator import validate_cli  # noqa: F401 (a fixture)

EXPECT_ALL = [
    "--expect-version",
    "fake-0.1",
    "--expect-attention-backend",
    "fa3",
    "--expect-tensor-parallel-size",
    "1",
    "--expect-deterministic-inference",
    "on",
    "--expect-radix-cache",
    "on",
]


@pytest.fixture(autouse=True)
def _python_sigpipe():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, previous)


# --- parsing -------------------------------------------------------------------------------------


def test_the_facts_are_read_from_sglangs_resolved_server_args():
    info = {
        "version": "0.5.23",
        "attention_backend": "flashinfer",
        "enable_deterministic_inference": True,
        "disable_radix_cache": True,
        "tp_size": 2,
        "launch_command": "python3 -m sglang.launch_server ...",
    }
    assert facts_of(info) == ServerFacts(
        version="0.5.23",
        attention_backend="flashinfer",
        deterministic_inference=True,
        radix_cache=False,
        tensor_parallel_size=2,
    )


@pytest.mark.parametrize(
    "info",
    [
        None,
        [],
        "0.5.23",
        {"version": 5, "tp_size": True, "disable_radix_cache": "no", "attention_backend": ""},
    ],
)
def test_what_a_server_does_not_say_or_says_with_another_type_is_unknown(info):
    assert facts_of(info) == ServerFacts()


def test_a_long_version_is_clipped_to_what_the_summary_carries():
    assert facts_of({"version": "9" * 500}).version == "9" * 64


def test_each_contradiction_names_the_field_the_expected_and_the_found_value():
    info = {
        "version": "0.5.22",
        "attention_backend": "flashinfer",
        "decode_attention_backend": "triton",
        "enable_deterministic_inference": False,
        "disable_radix_cache": False,
        "tp_size": 2,
    }
    expected = Expectations("0.5.23", "fa3", 1, True, False)
    wrong, unknown = check(info, expected)
    assert unknown == []
    assert wrong == [
        "SGLang version: expected 0.5.23, found 0.5.22 (version)",
        "attention backend: expected fa3, found flashinfer (attention_backend)",
        "decode attention backend: expected fa3, found triton (decode_attention_backend)",
        "tensor parallel size: expected 1, found 2 (tp_size)",
        "deterministic inference: expected on, found off (enable_deterministic_inference)",
        "radix cache: expected off, found on (disable_radix_cache)",
    ]


def test_matching_facts_and_no_expectations_contradict_nothing():
    info = {
        "version": "0.5.23",
        "attention_backend": "FA3",
        "enable_deterministic_inference": True,
        "disable_radix_cache": False,
        "tp_size": 1,
    }
    assert check(info, Expectations("0.5.23", "fa3", 1, True, True)) == ([], [])
    assert check({}, Expectations()) == ([], [])
    assert check({}, Expectations(tensor_parallel_size=1)) == (
        [],
        ["tensor parallel size (expected 1; /server_info has no tp_size)"],
    )


def test_the_endpoints_common_facts_leave_out_what_they_disagree_on():
    a = ServerFacts(version="0.5.23", attention_backend="fa3", tensor_parallel_size=1)
    b = ServerFacts(version="0.5.23", attention_backend="triton", tensor_parallel_size=1)
    assert common_facts([a, b]) == ServerFacts(version="0.5.23", tensor_parallel_size=1)
    assert common_facts([]) is None


# --- through the command -------------------------------------------------------------------------


def test_a_server_as_expected_passes_and_its_facts_are_in_the_report_and_summary(validate_cli):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(*EXPECT_ALL, "--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    assert run.summary.server == ServerFacts(
        version="fake-0.1",
        attention_backend="fa3",
        deterministic_inference=True,
        radix_cache=True,
        tensor_parallel_size=1,
    )
    assert run.report["options"]["expectVersion"] == "fake-0.1"
    assert run.report["endpoints"][0]["mismatches"] == []


@pytest.mark.parametrize(
    ("reported", "words"),
    [
        ({"version": "0.5.22"}, "SGLang version: expected fake-0.1, found 0.5.22 (version)"),
        (
            {"attention_backend": "flashinfer"},
            "attention backend: expected fa3, found flashinfer (attention_backend)",
        ),
        ({"tp_size": 2}, "tensor parallel size: expected 1, found 2 (tp_size)"),
        (
            {"enable_deterministic_inference": False},
            "deterministic inference: expected on, found off (enable_deterministic_inference)",
        ),
        (
            {"disable_radix_cache": True},
            "radix cache: expected on, found off (disable_radix_cache)",
        ),
    ],
)
def test_a_server_that_contradicts_the_spec_fails_and_no_suite_runs(validate_cli, reported, words):  # noqa: F811
    with FakeEngine(server_info=reported) as bad, FakeEngine() as good:
        run = validate_cli(*EXPECT_ALL, endpoints=[("pod-a", bad), ("pod-b", good)])
        assert bad.generate_requests == good.generate_requests == 0
    assert run.rc == 1, run.out
    assert run.summary.verdict == Verdict.SERVER_MISMATCH
    assert run.summary.reason == f"server mismatch: pod-a: {words}; the suites did not run"
    assert run.last_line == run.summary.reason
    # No pod was tested, so none passes: the operator keeps all of them out of traffic.
    assert run.summary.failed_endpoints == ["pod-a", "pod-b"]
    assert run.summary.suites == [] and run.summary.fingerprint is None
    assert run.report["endpoints"][0]["mismatches"] == [words]


def test_the_old_endpoint_names_are_read_where_the_new_ones_answer_404(validate_cli):  # noqa: F811
    with FakeEngine(info_names="old") as engine:
        run = validate_cli(*EXPECT_ALL, "--suites", "none", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    assert run.summary.server is not None and run.summary.server.version == "fake-0.1"
    assert run.report["endpoints"][0]["server"]["modelInfo"]["model_path"] == "fake/model"


def test_a_server_without_server_info_cannot_be_checked_against_expectations(validate_cli):  # noqa: F811
    with FakeEngine(info_names="none") as engine:
        run = validate_cli(*EXPECT_ALL, endpoints=[("pod-a", engine)])
    assert run.rc == 2, run.out
    assert run.summary.verdict == Verdict.COULD_NOT_TEST
    assert run.summary.reason == (
        "could not test: pod-a: cannot check the deployment (--expect-*): "
        "GET /server_info answered HTTP 404, GET /get_server_info answered HTTP 404"
    )


def test_a_server_that_leaves_an_expected_field_out_cannot_be_checked(validate_cli):  # noqa: F811
    with FakeEngine(server_info={"tp_size": None}) as engine:
        run = validate_cli(*EXPECT_ALL, endpoints=[("pod-a", engine)])
    assert run.rc == 2, run.out
    assert run.summary.reason == (
        "could not test: pod-a: cannot check the deployment: the server does not report "
        "tensor parallel size (expected 1; /server_info has no tp_size)"
    )


def test_without_expectations_a_server_without_server_info_is_still_tested(validate_cli):  # noqa: F811
    with FakeEngine(info_names="none") as engine:
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    assert run.summary.server is None


def test_expectations_need_the_sglang_protocol(validate_cli):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(
            "--protocol", "openai", "--expect-radix-cache", "on", endpoints=[("pod-a", engine)]
        )
    assert run.rc == 2
    assert "--expect-*: only the sglang protocol reads GET /server_info" in run.summary.reason


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--expect-version", "0.5 .23"], "--expect-version '0.5 .23' is not a version"),
        (["--expect-attention-backend", "FA3!"], "--expect-attention-backend 'FA3!' is not"),
        (["--expect-tensor-parallel-size", "0"], "--expect-tensor-parallel-size must be"),
    ],
)
def test_bad_expectations_are_refused_naming_the_option(validate_cli, args, words):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(*args, endpoints=[("pod-a", engine)])
    assert run.rc == 2 and words in run.summary.reason


# --- the RadixCache suite with the cache off -----------------------------------------------------


def test_radix_cache_is_skipped_when_the_server_reports_the_cache_off(validate_cli):  # noqa: F811
    with FakeEngine(server_info={"disable_radix_cache": True}) as engine:
        run = validate_cli("--suites", "RadixCache,Single", endpoints=[("pod-a", engine)])
        # Nothing was sent for it: the suite does not pass on nothing.
        assert engine.generate_requests == 1 + 7  # the fingerprint, Single's 7 batches
    assert run.rc == 0, run.out
    radix = run.suite("RadixCache")
    assert radix.outcome == SuiteOutcome.SKIPPED and not radix.passed
    assert radix.reason is not None and radix.reason.startswith("prefix cache off: ")
    assert run.summary.server is not None and run.summary.server.radix_cache is False


def test_radix_cache_is_skipped_when_no_prefill_used_the_cache(validate_cli, monkeypatch):  # noqa: F811
    with FakeEngine() as engine:
        monkeypatch.setattr(FakeEngine, "cached_prefix", lambda self, prompt, limit: 0)
        run = validate_cli("--suites", "RadixCache", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    radix = run.suite("RadixCache")
    assert radix.outcome == SuiteOutcome.SKIPPED
    assert radix.reason == (
        "prefix cache off: none of 4 second prefills used the cache (meta_info.cached_tokens 0)"
    )


@pytest.mark.parametrize(("cached", "noted"), [(1, False), (2, True)])
def test_fresh_prefills_with_cached_tokens_are_noted(validate_cli, monkeypatch, cached, noted):  # noqa: F811
    # Every prefill, the first of a never-seen sequence included, reports `cached` tokens. One
    # shared first id is chance (the marker's ids come from a range of 255); two are not.
    with FakeEngine() as engine:
        monkeypatch.setattr(FakeEngine, "cached_prefix", lambda self, prompt, limit: cached)
        run = validate_cli("--suites", "RadixCache", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    notes = next(s for s in run.report["suites"] if s["name"] == "RadixCache")["notes"]
    assert any("4 prefills of never-seen sequences" in n for n in notes) is noted, notes


# --- under traffic: no flush ---------------------------------------------------------------------


def test_the_cache_suites_give_a_verdict_where_every_flush_is_refused(validate_cli):  # noqa: F811
    # A serving SGLang refuses /flush_cache while requests run; the suites never ask for one.
    with FakeEngine(fault="flush-400") as engine:
        run = validate_cli("--suites", "Prefix,RadixCache", endpoints=[("pod-a", engine)])
    assert run.rc == 0, run.out
    assert [s.outcome for s in run.summary.suites] == [SuiteOutcome.PASSED] * 2


def test_each_run_sends_prompts_no_earlier_run_sent(validate_cli):  # noqa: F811
    with FakeEngine() as engine:
        first = validate_cli("--suites", "Prefix,RadixCache", endpoints=[("pod-a", engine)])
        cached_before = len(engine.cache)
        second = validate_cli("--suites", "Prefix,RadixCache", endpoints=[("pod-a", engine)])
    assert first.rc == second.rc == 0
    assert first.report["cacheNonce"] != second.report["cacheNonce"]
    radix = next(s for s in second.report["suites"] if s["name"] == "RadixCache")
    # Every first prefill of the second run was from scratch although the cache was full.
    assert cached_before > 0
    assert not any("never-seen sequences" in note for note in radix["notes"]), radix["notes"]
