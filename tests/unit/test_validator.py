"""`detinfer validate` against scripted engines on 127.0.0.1: verdicts, exit codes, reasons.

Each FakeEngine is a real HTTP server (tests/support/fake_engine.py): deterministic, batch-variant,
concurrency-variant, cache-variant, of another "model", or faulty.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.sglang_procedure import ProcedureResult, run_sglang_procedure
from detinfer.api import Suite, SuiteOutcome, ValidationSummary, Verdict
from detinfer.api.spec import FINGERPRINT_PATTERN
from detinfer.cli import main
from detinfer.validator import ValidatorConfig, run_validation, suites
from detinfer.validator.report import Report
from detinfer.validator.terminal import Terminal
from tests.support.fake_engine import FakeEngine


@pytest.fixture(autouse=True)
def _python_sigpipe():
    # `detinfer render` (test_cli.py) restores SIGPIPE's default action for this whole process;
    # a fake engine writing to a client that timed out would then kill pytest.
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, previous)


class Run:
    """One `detinfer validate` through the CLI entry point."""

    def __init__(self, rc: int, out: str, err: str, summary_path: Path, report_path: Path):
        self.rc = rc
        self.out = out
        self.err = err
        self.summary_text = summary_path.read_text()
        self.summary = ValidationSummary.parse(self.summary_text)
        self.report = json.loads(report_path.read_text()) if report_path.exists() else None

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]

    def suite(self, name: str):
        return next(s for s in self.summary.suites if s.name == name)


@pytest.fixture
def validate_cli(tmp_path, capsys):
    def run(*args: str, endpoints=(), trials: int | None = 4) -> Run:
        summary = tmp_path / "summary.json"
        report = tmp_path / "report.json"
        report.unlink(missing_ok=True)
        argv = ["validate", "--summary-file", str(summary), "--report", str(report)]
        for name, engine in endpoints:
            argv += ["--endpoint", f"{name}={engine if isinstance(engine, str) else engine.url}"]
        if trials is not None:
            argv += ["--trials", str(trials)]
        rc = main([*argv, *args])
        captured = capsys.readouterr()
        return Run(rc, captured.out, captured.err, summary, report)

    return run


def validate(config: ValidatorConfig) -> Report:
    return asyncio.run(run_validation(config))


def sglang_procedure(url: str, *args: Any, **kw: Any) -> ProcedureResult:
    return asyncio.run(run_sglang_procedure(url, *args, **kw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- verdicts ------------------------------------------------------------------------------------


def test_deterministic_replicas_pass_every_suite_with_the_planned_tokens(validate_cli):
    with FakeEngine() as a, FakeEngine() as b:
        run = validate_cli(endpoints=[("pod-a", a), ("pod-b", b)], trials=None)
        assert run.rc == 0, run.out
        # The default plan is what is really sent: 13 Single batches up to 33 (the fake reports
        # no max_running_requests), 162 requests.
        assert a.generated_tokens == b.generated_tokens == 24_156
        # No cache flush: the cache suites' prompts are new to the server (the run's nonce).
        assert a.generate_requests == 162 and a.flushes == 0
    assert run.summary.verdict == Verdict.DETERMINISTIC
    assert [s.name for s in run.summary.suites] == list(Suite)
    assert all(s.unique_outputs == 1 and s.passed for s in run.summary.suites)
    assert run.suite("Single").samples == 2 * 178
    assert run.suite("CrossReplica").samples > 0
    assert re.match(FINGERPRINT_PATTERN, run.summary.fingerprint)
    assert run.summary.failed_endpoints == []
    assert run.summary.tokens_used == run.report["tokensUsed"] > 2 * 24_156
    assert run.summary.latency_p50_milliseconds > 0 and run.summary.tokens_per_second > 0
    assert len(run.summary_text.encode()) < 4096
    assert run.last_line.startswith("deterministic: 9 suites")
    assert run.report["schemaVersion"] == 1 and run.report["kind"] == "ValidationReport"
    assert run.report["comparedOn"] == "tokenIds+logprobs"
    endpoint = run.report["endpoints"][0]
    assert endpoint["server"]["modelInfo"]["model_path"] == "fake/model"
    assert endpoint["server"]["serverInfo"]["version"] == "fake-0.1"
    facts = {
        "version": "fake-0.1",
        "attentionBackend": "fa3",
        "deterministicInference": True,
        "radixCache": True,
        "tensorParallelSize": 1,
    }
    # The report's facts add /model_info's; the summary's ServerFacts has no room for them.
    model = {"modelPath": "fake/model", "weightVersion": "default"}
    assert endpoint["serverFacts"] == {**facts, **model} == run.report["server"]
    assert run.summary.server is not None and run.summary.server.to_wire() == facts
    radix = next(s for s in run.report["suites"] if s["name"] == "RadixCache")
    assert "pod-a: 16 of 16 second prefills used the cache" in radix["notes"][0]


def test_batch_variance_in_the_last_bit_of_a_logprob_is_found_at_the_first_token(validate_cli):
    with FakeEngine(variance="batch-logprob") as engine:
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 1
    assert run.summary.verdict == Verdict.NOT_DETERMINISTIC
    assert run.summary.failed_endpoints == ["pod-a"]
    single = run.suite("Single")
    assert (single.passed, single.unique_outputs, single.samples) == (False, 2, 34)
    assert single.first_divergence.startswith(
        "batch of 9, copy 1 vs batch of 1, copy 1 (the probe prompt): "
        "logprob of output token 0 (id "
    )
    assert single.first_divergence.endswith("(tokens identical)")
    assert run.last_line == f"not deterministic: Single: {single.first_divergence}"


@pytest.mark.parametrize(
    ("variance", "words"),
    [
        ("batch-token", r": output token 5: id \d+ vs id \d+$"),
        (
            "logprob-then-token",
            r"logprob of output token 0 \(id \d+\): \S+ vs \S+ \(tokens identical up to token "
            r"20\); output token 20: id \d+ vs id \d+$",
        ),
        ("batch-eos", r": 16 vs 10 output tokens \(finish reason length vs stop\)$"),
    ],
)
def test_the_first_divergence_names_the_token_position_and_both_tokens(
    validate_cli, variance, words
):
    with FakeEngine(variance=variance) as engine:
        run = validate_cli(
            "--suites",
            "Single",
            "--max-new-tokens",
            "16" if variance == "batch-eos" else "24",
            endpoints=[("pod-a", engine)],
        )
    assert run.rc == 1, run.out
    assert re.search(words, run.suite("Single").first_divergence)


def test_concurrency_variance_is_found_only_by_the_concurrent_suite(validate_cli):
    with FakeEngine(variance="concurrent") as engine:
        run = validate_cli("--suites", "Single,Concurrent", endpoints=[("pod-a", engine)])
    assert run.rc == 1
    assert run.suite("Single").passed
    concurrent = run.suite("Concurrent")
    # The 3 distinct prompts once alone, then 4 requests at once.
    assert not concurrent.passed and concurrent.samples == 3 + 4
    assert re.match(
        r"concurrent request \d of 4 vs (Single batch of 1, copy 1|a request alone) ",
        concurrent.first_divergence,
    )


@pytest.mark.parametrize("suite", ["Mixed", "Prefix"])
def test_variance_with_the_company_of_other_lengths_is_found_by_mixed_and_prefix(
    validate_cli, suite
):
    with FakeEngine(variance="mixed") as engine:
        run = validate_cli("--suites", suite, endpoints=[("pod-a", engine)])
    assert run.rc == 1
    assert run.suite(suite).first_divergence.startswith(
        {
            "Mixed": "mixed batch 2 (2 prompts), slot 1 vs mixed batch 1 (alone) (the probe "
            "prompt): logprob of output token 0",
            "Prefix": "prefix batch 2 (2 prompts), slot 1 vs prefix batch 1 (alone) (the run's "
            "nonce and the long text's first 1 characters): logprob of output token 0",
        }[suite]
    )


def test_the_sampling_suite_sends_seeded_and_unseeded_top_p_samples(validate_cli):
    with FakeEngine() as engine:
        run = validate_cli("--suites", "Sampling", endpoints=[("pod-a", engine)])
        sent = engine.sampling_params[1:]  # after the fingerprint's batch
    assert run.rc == 0, run.out
    sampling = run.suite("Sampling")
    assert sampling.outcome == SuiteOutcome.PASSED and sampling.unique_outputs == 1
    # Trials 4 (largest batch 9): seeded batches 1, 2, 3, 4, 7, 8, 9; unseeded 1 and 9; the two
    # fillers of the concurrent requests alone; 4 requests at once; the seeded probe 4 times
    # through POST /v1/completions (alone twice, a batch of 2).
    assert sampling.samples == 34 + 10 + 2 + 4 + 4
    assert sampling.tokens_compared == sampling.samples * 64 == sampling.logprobs_compared
    assert all(p["temperature"] == 0.8 and p["top_p"] == 0.9 for p in sent)
    seeded = [p for p in sent if "sampling_seed" in p]
    assert {p["sampling_seed"] for p in seeded} == {42}
    assert len(seeded) == 7 + 1 + 2 and len(sent) - len(seeded) == 2 + 1 + 2
    report = next(s for s in run.report["suites"] if s["name"] == "Sampling")
    assert any(
        "without a seed gave the same output as with sampling_seed 42" in n for n in report["notes"]
    )


def test_sampling_without_a_seed_that_is_not_fixed_fails_the_sampling_suite_only(validate_cli):
    with FakeEngine(variance="unseeded") as engine:
        run = validate_cli("--suites", "Single,Sampling", endpoints=[("pod-a", engine)])
    assert run.rc == 1, run.out
    assert run.suite("Single").passed
    sampling = run.suite("Sampling")
    assert not sampling.passed and sampling.unique_outputs > 1
    assert sampling.first_divergence.startswith(
        "no seed, batch of 9, copy 1 vs no seed, batch of 1, copy 1 (the probe prompt): "
    )


def test_the_openai_protocol_sends_seed_and_top_p_and_leaves_the_seed_out(validate_cli):
    # The seeded samples agree, so "seed" was sent; the unseeded ones differ, so it was not.
    # Engines behind the OpenAI protocol promise nothing for unseeded requests: that
    # difference is reported in a note, not judged (SGLang's protocol judges it, above).
    with FakeEngine(variance="unseeded") as engine:
        run = validate_cli(
            "--protocol", "openai", "--suites", "Sampling", endpoints=[("p", engine)]
        )
    assert run.rc == 0, run.out
    sampling = run.suite("Sampling")
    assert sampling.passed and sampling.unique_outputs == 1
    report = next(s for s in run.report["suites"] if s["name"] == "Sampling")
    note = next(n for n in report["notes"] if n.startswith("without a seed (not judged"))
    assert "first difference: no seed, batch of 9, copy 1 vs no seed, batch of 1, copy 1" in note


def test_a_sampler_that_sees_the_batch_fails_the_sampling_suite_only(validate_cli):
    with FakeEngine(variance="sampled-batch") as engine:
        run = validate_cli("--suites", "Single,Sampling", endpoints=[("pod-a", engine)])
    assert run.rc == 1, run.out
    assert run.suite("Single").passed
    assert run.suite("Sampling").first_divergence.startswith(
        "sampling_seed 42, batch of 9, copy 1 vs sampling_seed 42, batch of 1, copy 1 (the "
        "probe prompt): logprob of output token 0"
    )


def test_a_cache_that_changes_logprobs_fails_radix_cache(validate_cli):
    with FakeEngine(variance="radix") as engine:
        run = validate_cli("--suites", "RadixCache", endpoints=[("pod-a", engine)])
        assert engine.flushes == 0
    assert run.rc == 1
    radix = run.suite("RadixCache")
    assert (radix.samples, radix.unique_outputs) == (8, 2)
    # 8 marker ids, 64 prompt ids, 64 output ids; all but the last position from the cache.
    assert re.match(
        r"trial 1, prefilled with 128 cached tokens vs trial 1, prefilled from scratch "
        r"\(136 token ids\): logprob at prompt position 128 \(id \d+\): \S+ vs \S+; "
        r"logprob of output token 0 \(id \d+\): \S+ vs \S+ \(tokens identical\)$",
        radix.first_divergence,
    )


def test_replicas_of_different_models_fail_cross_replica(validate_cli):
    with FakeEngine() as a, FakeEngine(model_seed=2) as b:
        run = validate_cli("--suites", "CrossReplica", endpoints=[("pod-a", a), ("pod-b", b)])
        fp_a = run.report["endpoints"][0]["fingerprint"]
        assert run.rc == 1
        cross = run.suite("CrossReplica")
        assert not cross.passed and cross.unique_outputs == 2
        assert cross.first_divergence.startswith(
            "pod-b vs pod-a, fingerprint prompt 1 (Fingerprint"
        )
        assert run.summary.failed_endpoints == ["pod-a", "pod-b"]  # which one is right is unknown
        assert run.summary.fingerprint is None
        # With the expected fingerprint, the replica that gives it is cleared.
        run = validate_cli(
            "--suites",
            "CrossReplica",
            "--expected-fingerprint",
            fp_a,
            endpoints=[("pod-a", a), ("pod-b", b)],
        )
    assert run.rc == 1 and run.summary.failed_endpoints == ["pod-b"]


def test_one_endpoint_skips_cross_replica(validate_cli):
    with FakeEngine() as engine:
        run = validate_cli("--suites", "CrossReplica", endpoints=[("pod-a", engine)])
    assert run.rc == 0
    cross = run.suite("CrossReplica")
    # Skipped is reported as skipped: not a pass, not a failure, and the run still passes.
    assert cross.samples == 0 and cross.outcome == SuiteOutcome.SKIPPED and not cross.passed
    assert run.report["suites"][-1]["skipped"].startswith("one endpoint")


# --- fingerprint ---------------------------------------------------------------------------------


def test_the_fingerprint_survives_restarts_and_changes_with_the_model(validate_cli):
    fingerprints = []
    for seed in (1, 1, 2):
        with FakeEngine(model_seed=seed) as engine:  # a new server each time: a restart
            run = validate_cli("--suites", "none", endpoints=[("pod-a", engine)])
        assert run.rc == 0 and run.summary.suites == []
        fingerprints.append(run.summary.fingerprint)
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]
    # Other sampling options of the suites do not enter it.
    with FakeEngine() as engine:
        run = validate_cli(
            "--suites",
            "Single",
            "--max-new-tokens",
            "3",
            "--sampling-seed",
            "7",
            endpoints=[("pod-a", engine)],
        )
    assert run.summary.fingerprint == fingerprints[0]


def test_an_unexpected_fingerprint_exits_1(validate_cli):
    expected = "sha256:" + "0" * 64
    with FakeEngine() as engine:
        run = validate_cli(
            "--suites", "none", "--expected-fingerprint", expected, endpoints=[("pod-a", engine)]
        )
        fingerprint = run.report["endpoints"][0]["fingerprint"]
        assert run.rc == 1
        assert run.summary.verdict == Verdict.FINGERPRINT_MISMATCH
        assert run.summary.failed_endpoints == ["pod-a"]
        assert (
            run.last_line == f"fingerprint mismatch: expected {expected}; pod-a gave {fingerprint}"
        )
        run = validate_cli(
            "--suites", "none", "--expected-fingerprint", fingerprint, endpoints=[("pod-a", engine)]
        )
    assert run.rc == 0 and run.summary.fingerprint == fingerprint
    assert run.last_line.endswith("; fingerprint as expected")


# --- protocols -----------------------------------------------------------------------------------


def test_missing_output_ids_fall_back_to_the_ids_in_the_logprobs(validate_cli):
    with FakeEngine() as with_ids, FakeEngine(output_ids=False) as without:
        run = validate_cli("--suites", "none", endpoints=[("a", with_ids), ("b", without)])
    assert run.rc == 0 and run.summary.fingerprint is not None


def test_without_logprobs_token_ids_are_compared(validate_cli):
    with FakeEngine(logprobs=False, variance="batch-token") as engine:
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", engine)])
    assert run.rc == 1 and run.report["comparedOn"] == "tokenIds"
    assert re.search(r"output token 5: id \d+ vs id \d+$", run.suite("Single").first_divergence)


def test_the_openai_protocol_compares_token_strings_and_logprobs(validate_cli):
    with FakeEngine() as engine:
        run = validate_cli("--protocol", "openai", endpoints=[("pod-a", engine)])
        assert engine.flushes == 0
    assert run.rc == 0, run.out
    assert run.report["comparedOn"] == "tokens+logprobs"
    assert run.report["endpoints"][0]["server"]["model"] == "fake/model"
    radix = run.suite("RadixCache")
    assert (radix.samples, radix.unique_outputs, radix.outcome) == (0, 0, SuiteOutcome.SKIPPED)
    reported = next(s for s in run.report["suites"] if s["name"] == "RadixCache")
    assert reported["skipped"] == "the openai protocol cannot send token ids"
    prefix = next(s for s in run.report["suites"] if s["name"] == "Prefix")
    assert prefix["outcome"] == "Passed" and prefix["notes"] == []


def test_the_openai_protocol_finds_batch_variance(validate_cli):
    with FakeEngine(variance="batch-logprob") as engine:
        run = validate_cli("--protocol", "openai", "--suites", "Single", endpoints=[("p", engine)])
    assert run.rc == 1
    assert re.search(
        r"logprob of output token 0 \(token '\w+'\): ", run.suite("Single").first_divergence
    )


def test_the_openai_protocol_falls_back_to_text(validate_cli):
    with FakeEngine(logprobs=False, variance="batch-token") as engine:
        run = validate_cli("--protocol", "openai", "--suites", "Single", endpoints=[("p", engine)])
    assert run.rc == 1 and run.report["comparedOn"] == "text"
    assert re.search(
        r"\(the probe prompt\): text differs at character 5: '\w+' vs '\w+'$",
        run.suite("Single").first_divergence,
    )


# --- no verdict without evidence ----------------------------------------------------------------


def test_a_pass_shows_what_it_rests_on(validate_cli):
    with FakeEngine() as a, FakeEngine() as b:
        run = validate_cli(
            "--suites", "Single,CrossReplica", endpoints=[("pod-a", a), ("pod-b", b)]
        )
    assert run.rc == 0, run.out
    single = run.suite("Single")
    # Batches of 1, 2, 3, 4, 7, 8 and 9 on two endpoints, 64 tokens each, a logprob per token.
    assert (single.samples, single.tokens_compared, single.logprobs_compared) == (
        2 * 34,
        2 * 34 * 64,
        2 * 34 * 64,
    )
    assert single.outcome == SuiteOutcome.PASSED and single.passed
    assert run.suite("CrossReplica").tokens_compared > 0
    assert run.summary.compared_on == "tokenIds+logprobs"
    assert run.summary.tokens_compared == run.report["tokensCompared"] > single.tokens_compared
    assert run.summary.logprobs_compared == run.report["logprobsCompared"]
    endpoint_single = next(s for s in run.report["endpoints"][0]["suites"] if s["name"] == "Single")
    assert (endpoint_single["tokensCompared"], endpoint_single["outcome"]) == (34 * 64, "Passed")


@pytest.mark.parametrize(
    ("protocol", "fault", "fault_after", "words"),
    [
        (
            "sglang",
            "empty-stop",
            0,
            "Fingerprint on pod-a: no output tokens in 4 samples (prompt 1: 0 of 32 tokens, "
            "finish reason 'stop' although ignore_eos was asked)",
        ),
        (
            "sglang",
            "empty-null",
            1,
            "Single on pod-a: no output tokens in 34 samples (batch of 1, copy 1: 0 of 64 "
            "tokens and no finish reason)",
        ),
        (
            "sglang",
            "one-token",
            1,
            "Single on pod-a: 34 of 34 samples ended early (batch of 1, copy 1: 1 of 64 tokens, "
            "finish reason 'stop' although ignore_eos was asked)",
        ),
        (
            "sglang",
            "nan-logprobs",
            1,
            "Single on pod-a: 2176 of 2176 logprobs are not finite numbers (batch of 1, copy 1: "
            "nan at output token 0)",
        ),
        (
            "sglang",
            "inf-logprobs",
            0,
            "Fingerprint on pod-a: 128 of 128 logprobs are not finite numbers (prompt 1: -inf "
            "at output token 0)",
        ),
        (
            "sglang",
            "constant-logprobs",
            1,
            "Single on pod-a: all 2176 logprobs are the same value (-0.5)",
        ),
        # The OpenAI protocol cannot ask for ignore_eos: a stop the server names is allowed,
        # but no tokens at all, or fewer without a finish reason, are no evidence.
        ("openai", "empty-stop", 0, "Fingerprint on pod-a: no output tokens in 4 samples"),
        (
            "openai",
            "empty-null",
            1,
            "Single on pod-a: no output tokens in 34 samples (batch of 1, copy 1: 0 of 64 "
            "tokens and no finish reason)",
        ),
        (
            "openai",
            "constant-logprobs",
            0,
            "Fingerprint on pod-a: all 128 logprobs are the same value (-0.5)",
        ),
    ],
)
def test_a_server_that_gives_no_evidence_cannot_pass(
    validate_cli, protocol, fault, fault_after, words
):
    with FakeEngine(fault=fault, fault_after=fault_after) as server:
        run = validate_cli(
            "--protocol", protocol, "--suites", "Single", endpoints=[("pod-a", server)]
        )
    assert run.rc == 2, run.out
    assert run.summary.verdict == Verdict.COULD_NOT_TEST
    # With the fault from the first request, the suite lacks evidence too, and says so.
    more = " (and 1 more suite could not test)" if fault_after == 0 else ""
    assert run.summary.reason == f"could not test: {words}{more}"
    assert run.last_line == run.summary.reason
    # No fingerprint of nothing: not in the summary, not in the report.
    assert run.summary.fingerprint is None and run.report.get("fingerprint") is None
    if fault_after == 0:
        assert run.report["endpoints"][0].get("fingerprint") is None
    # The suites ran to the end: the summary shows what each rested on.
    single = run.suite("Single")
    assert single.outcome == SuiteOutcome.COULD_NOT_TEST and not single.passed
    assert single.reason and single.reason.startswith("pod-a: ")
    assert "Traceback" not in run.out + run.err


def test_a_redirect_is_an_error_of_that_request(validate_cli):
    for protocol, path in (("sglang", "/generate"), ("openai", "/v1/completions")):
        with FakeEngine(fault="redirect") as server:
            run = validate_cli("--protocol", protocol, endpoints=[("pod-a", server)])
        assert run.rc == 2, run.out
        assert run.summary.reason.startswith(
            f"could not test: pod-a: POST {path} answered HTTP 302 "
            "(a redirect to http://127.0.0.1:1/login, not followed): "
        ), run.summary.reason
        assert run.summary.fingerprint is None and run.summary.suites == []


def test_a_divergence_elsewhere_still_fails_a_run_that_lacks_evidence(validate_cli):
    with (
        FakeEngine(variance="batch-logprob") as a,
        FakeEngine(fault="empty-stop", fault_after=1) as b,
    ):
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", a), ("pod-b", b)])
    assert run.rc == 1, run.out
    assert run.summary.verdict == Verdict.NOT_DETERMINISTIC
    assert run.summary.failed_endpoints == ["pod-a"]
    assert run.summary.reason.startswith("not deterministic: Single: pod-a: batch of 9, copy 1")
    single = run.suite("Single")
    assert single.outcome == SuiteOutcome.FAILED
    pod_b = next(s for s in run.report["endpoints"][1]["suites"] if s["name"] == "Single")
    assert pod_b["outcome"] == "CouldNotTest" and pod_b["tokensCompared"] == 0


def test_a_skipped_suite_is_reported_as_skipped(validate_cli):
    with FakeEngine() as engine:
        run = validate_cli("--suites", "Single,CrossReplica", endpoints=[("pod-a", engine)])
    assert run.rc == 0
    cross = run.suite("CrossReplica")
    assert (cross.outcome, cross.passed, cross.samples) == (SuiteOutcome.SKIPPED, False, 0)
    assert cross.reason == "one endpoint: there is no other replica to compare with"
    assert run.summary.reason == (
        "deterministic: 1 suite (Single) gave one output per prompt in 34 samples on pod-a"
    )


# --- could not test ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "args", "words"),
    [
        (
            dict(fault="http500", fault_after=3),
            [],
            "pod-a: POST /generate answered HTTP 500: "
            '{"error": "CUDA error: an illegal memory access was encountered"}',
        ),
        (dict(fault="garbage", fault_after=2), [], "POST /generate answered invalid JSON"),
        (dict(fault="truncated"), [], "POST /generate: the response was cut off"),
        (dict(fault="short-list"), [], "(a batch of 4) answered 3 outputs for 4 prompts"),
        (dict(fault="short-logprobs"), [], "has 31 output_token_logprobs for 32 output_ids"),
        (dict(fault="extra-tokens"), [], "gave 33 tokens, more than the 32 asked for"),
        (dict(fault="no-meta", fault_after=1), [], "output 1 has no meta_info object"),
        (
            dict(fault="abort", fault_after=1),
            [],
            "output 1 was not finished: the server ended it with reason 'abort'",
        ),
        (
            dict(fault="error-200"),
            [],
            'answered an error: {"message": "The engine is overloaded", "code": 503}',
        ),
        (
            dict(fault="health-503"),
            # Long enough for one answer on a loaded machine: the reason names the last one.
            ["--wait-seconds", "2"],
            "pod-a: not ready after 2 s: GET /health answered HTTP 503",
        ),
        (
            dict(fault="hang"),
            ["--request-timeout-seconds", "0.3"],
            "pod-a: POST /generate timed out after 0.3 s",
        ),
        (
            dict(fault="hang", fault_after=1),
            # Long enough for the fingerprint step's one answer on a loaded machine.
            ["--timeout-seconds", "3"],
            "timed out after 3 s (--timeout-seconds), pod-a in Single",
        ),
    ],
)
def test_a_misbehaving_server_cannot_be_tested(validate_cli, engine, args, words):
    with FakeEngine(**engine) as server:
        run = validate_cli(*args, endpoints=[("pod-a", server)])
    assert run.rc == 2
    assert run.summary.verdict == Verdict.COULD_NOT_TEST
    assert words in run.summary.reason
    assert run.last_line == run.summary.reason and run.last_line.startswith("could not test: ")
    assert run.summary.suites == [] and run.summary.fingerprint is None
    assert "Traceback" not in run.out + run.err


def test_an_endpoint_that_refuses_connections_cannot_be_tested(validate_cli):
    url = f"http://127.0.0.1:{free_port()}"
    with FakeEngine() as healthy:
        run = validate_cli("--wait-seconds", "0.3", endpoints=[("up", healthy), ("down", url)])
    assert run.rc == 2
    assert run.summary.reason.startswith(
        f"could not test: down: not ready after 0.3 s: cannot connect to {url}"
    )


def test_an_unexpected_exception_is_an_internal_error(validate_cli, monkeypatch):
    async def broken(run, tally):
        raise RuntimeError("the kernel of the validator itself")

    monkeypatch.setitem(suites.SUITES, Suite.MIXED, broken)
    with FakeEngine() as engine:
        run = validate_cli(endpoints=[("pod-a", engine)])
    assert run.rc == 2
    assert run.summary.reason == (
        "could not test: internal error: RuntimeError: the kernel of the validator itself"
    )
    assert "Traceback" not in run.out + run.err
    assert "RuntimeError" in run.report["internalError"]
    # What ran before the error stays in the report, not in the summary.
    assert [s["name"] for s in run.report["endpoints"][0]["suites"]] == ["Fingerprint", "Single"]
    assert run.report["endpoints"][0]["stoppedIn"] == "Mixed"


def test_an_exception_outside_the_run_still_writes_a_summary(validate_cli, monkeypatch):
    from detinfer.validator import command

    def broken(coroutine):
        coroutine.close()
        raise ValueError("no loop")

    monkeypatch.setattr(command.asyncio, "run", broken)
    run = validate_cli(endpoints=[("pod-a", "http://127.0.0.1:1")])
    assert run.rc == 2
    assert run.summary.reason == "could not test: internal error: ValueError: no loop"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--trials", "many"], "could not test: invalid arguments: argument --trials: invalid int"),
        (["--suites", "Single,Fuzz"], "could not test: --suites: 'Fuzz' is not a suite"),
        (["--protocol", "grpc"], "invalid arguments: argument --protocol: invalid choice: 'grpc'"),
        (["--endpoint", "pod-a=10.0.0.7"], "--endpoint 'pod-a=10.0.0.7': the URL must look like"),
        ([], "could not test: --endpoint: give at least one endpoint to validate"),
    ],
)
def test_bad_arguments_exit_2_with_a_summary(validate_cli, args, words):
    run = validate_cli(*args, trials=None)
    assert run.rc == 2 and words in run.summary.reason, run.summary.reason


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("http://[::1:9", "is not a URL (Invalid IPv6 URL)"),
        ("http://::1:9", "an IPv6 address needs brackets: http://[ADDRESS]:PORT"),
        ("10.0.0.7:30000", "the URL must look like http://HOST:PORT"),
        ("pod-a=engine:30000", "the URL must look like http://HOST:PORT"),
        ("http://10.0.0.7:65536", "the port must be a number from 1 to 65535"),
        ("http://10.0.0.7:0", "the port must be a number from 1 to 65535"),
        ("http://10.0.0.7:http", "the port must be a number from 1 to 65535"),
        ("=http://10.0.0.7:30000", "the name before '=' is empty"),
        ("http://engine one:30000", "'engine one' is not a host name or an IP address"),
        ("http://user:secret@10.0.0.7:30000", "a user or password in the URL is not supported"),
        ("http://", "the URL must look like http://HOST:PORT"),
    ],
)
def test_a_bad_endpoint_is_refused_naming_the_option(validate_cli, value, words):
    run = validate_cli("--endpoint", value)
    assert run.rc == 2
    assert run.summary.verdict == Verdict.COULD_NOT_TEST
    assert run.summary.reason.startswith(f"could not test: --endpoint {value!r}: "), (
        run.summary.reason
    )
    assert words in run.summary.reason, run.summary.reason
    assert "internal error" not in run.summary.reason
    assert run.summary.fingerprint is None
    assert "Traceback" not in run.out + run.err


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    summary = tmp_path / "summary"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "detinfer.cli",
            "validate",
            "--endpoint",
            f"http://127.0.0.1:{free_port()}",
            "--wait-seconds",
            "0.2",
            "--summary-file",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("could not test: 127.0.0.1:")
    assert ValidationSummary.parse(summary.read_text()).verdict == Verdict.COULD_NOT_TEST


# --- API, plan, terminal, SGLang's procedure -----------------------------------------------------


def test_the_single_suite_sends_the_boundary_batch_sizes():
    with FakeEngine() as engine:
        report = validate(ValidatorConfig(endpoints=[engine.url], suites=["Single"], trials=16))
        assert engine.batch_sizes == [4, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33]
    assert report.verdict == Verdict.DETERMINISTIC and report.exit_code == 0
    assert report.to_summary().suites[0].samples == 178


def test_the_async_api_returns_a_report_for_the_bench():
    with FakeEngine(variance="batch-logprob") as engine:
        report = asyncio.run(
            run_validation(
                ValidatorConfig(
                    endpoints=[f"e={engine.url}"], suites=["Single"], trials=2, max_batch_size=9
                )
            )
        )
    assert report.verdict == Verdict.NOT_DETERMINISTIC
    assert report.to_summary().failed_endpoints == ["e"]
    sizes = (1, 2, 3, 4, 7, 8, 9)
    assert report.generated_tokens == engine.generated_tokens == 128 + sum(sizes) * 64


def test_plan_prints_the_budget_without_any_endpoint(capsys):
    assert main(["validate", "--plan"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^total\s+162\s+423\s+24156\s", out, re.M)


def test_a_terminal_gets_a_table(tmp_path):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with FakeEngine() as engine:
        report = validate(ValidatorConfig(endpoints=[engine.url], suites=["Single"], trials=1))
    Terminal(stream).report(report)
    assert "detinfer validate" in stream.getvalue() and "│" in stream.getvalue()
    plain = io.StringIO()
    Terminal(plain).report(report)
    assert "│" not in plain.getvalue() and plain.getvalue().startswith("suite ")


def test_sglangs_procedure_sees_only_text_and_counts_its_tokens():
    with FakeEngine() as engine:
        result = sglang_procedure(engine.url, "single", trials=10, max_new_tokens=8)
        warmed = sglang_procedure(engine.url, "single", trials=2, max_new_tokens=8, warmup=True)
    assert (result.samples, result.unique_outputs, result.detected) == (10, 1, False)
    assert result.unique_token_ids == 1
    assert result.generated_tokens == 8 * sum(range(1, 11))
    # 0.5.23's client has no warm-up; 0.5.3's ran three batches of 16.
    assert (result.warmup_generated_tokens, warmed.warmup_generated_tokens) == (0, 3 * 16 * 8)
    # A last-bit logprob difference never reaches the text: SGLang's procedure (50 trials)
    # misses it; detinfer's Single suite (16 trials) does not, with under a fifth of the tokens.
    with FakeEngine(variance="batch-logprob") as engine:
        result = sglang_procedure(engine.url, trials=50, max_new_tokens=8)
        ours = validate(
            ValidatorConfig(endpoints=[engine.url], suites=["Single"], max_new_tokens=8)
        )
    assert not result.detected and ours.verdict == Verdict.NOT_DETERMINISTIC
    assert (result.generated_tokens, ours.generated_tokens) == (8 * 1275, 128 + 8 * 178)
    assert ours.generated_tokens < result.generated_tokens / 5
    with FakeEngine(variance="batch-token") as engine:
        result = sglang_procedure(engine.url, trials=10, max_new_tokens=8)
    assert result.detected and result.unique_outputs == result.unique_token_ids == 2


def test_sglangs_prefix_procedure_flushes_before_each_batch():
    with FakeEngine() as engine:
        result = sglang_procedure(engine.url, "prefix", trials=5, max_new_tokens=4)
        assert engine.flushes == 5 and engine.batch_sizes == [1, 2, 3, 4, 5]
    assert result.samples == 15 and result.unique_outputs == 1 == result.unique_token_ids
    assert result.refused_flushes == 0
    # As SGLang's client does, a refused flush does not stop it (it is counted here).
    with FakeEngine(fault="flush-400") as engine:
        refused = sglang_procedure(engine.url, "prefix", trials=3, max_new_tokens=4)
    assert refused.refused_flushes == 3 and refused.samples == 6
    assert set(result.unique_per_prompt) == {f"prefix {n} characters" for n in (1, 511, 2048, 4097)}
