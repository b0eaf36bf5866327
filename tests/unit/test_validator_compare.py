"""The validator's pure parts: schedules, options, bitwise comparison, fingerprint, verdict."""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest

from detinfer.api import Suite, SuiteOutcome, ValidationSummary, Verdict
from detinfer.api.spec import FINGERPRINT_PATTERN, EngineSpec, ValidationSpec
from detinfer.validator.compare import Basis, Output, describe_divergence, fingerprint
from detinfer.validator.config import EndpointSpec, Protocol, ValidatorConfig, parse_suites
from detinfer.validator.errors import ConfigError
from detinfer.validator.evidence import Evidence
from detinfer.validator.options import PROTOCOLS, add_arguments
from detinfer.validator.prompts import FILLERS, LONG_TEXT, PREFIX_LENGTHS, PROBE_PROMPT
from detinfer.validator.report import Report, SuiteReport
from detinfer.validator.schedule import (
    batch_new_tokens,
    batch_size_schedule,
    concurrent_prompts,
    long_context_lengths,
    long_context_prompt,
    mixed_batches,
    prefix_batches,
    radix_prompt,
    sampling_alone_requests,
    sampling_batches,
    sampling_concurrent_requests,
    single_batches,
    suite_plans,
    unseeded_batches,
)
from detinfer.validator.verdict import decide

FP_A = "sha256:" + "a" * 64
FP_B = "sha256:" + "b" * 64


def config(**kw) -> ValidatorConfig:
    return ValidatorConfig(endpoints=kw.pop("endpoints", ["http://127.0.0.1:30000"]), **kw)


# --- schedules -----------------------------------------------------------------------------------


def test_batch_sizes_probe_each_power_of_two_boundary_from_both_sides():
    assert batch_size_schedule(33) == [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33]
    assert batch_size_schedule(65)[-3:] == [63, 64, 65]
    assert batch_size_schedule(8) == [1, 2, 3, 4, 7, 8]
    assert batch_size_schedule(1) == [1]


def test_single_batches_follow_the_trials_unless_a_bound_is_given():
    assert single_batches(config())[-1] == 33  # 16 trials: 2 * 16 + 1
    assert single_batches(config(trials=4)) == [1, 2, 3, 4, 7, 8, 9]
    assert single_batches(config(trials=4, max_batch_size=17))[-1] == 17


def test_sampling_batches_cross_the_small_boundaries_and_one_past_16():
    assert sampling_batches(config()) == [1, 2, 3, 4, 7, 8, 9, 17]
    assert sampling_batches(config(trials=5)) == [1, 2, 3, 4, 7, 8, 9, 11]  # bound 11
    assert sampling_batches(config(trials=4)) == [1, 2, 3, 4, 7, 8, 9]  # bound 9
    assert sampling_batches(config(trials=2)) == [1, 2, 3, 4]  # bound 5
    assert unseeded_batches(config()) == [1, 9]
    assert unseeded_batches(config(trials=2)) == [1, 5]
    assert unseeded_batches(config(trials=16, max_batch_size=1)) == [1]


def test_sampling_mixes_seeded_and_unseeded_concurrent_requests():
    requests = sampling_concurrent_requests(8)
    assert [p for p, _ in requests] == concurrent_prompts(8)
    assert [seeded for _, seeded in requests] == [True, True, False, False] * 2
    alone = sampling_alone_requests(16)
    # Every filler that is sent at once is also sent alone, with and without the seed; the
    # probe's references are the batches of 1.
    assert set(alone) == {(f, seeded) for f in FILLERS for seeded in (True, False)}
    assert len(alone) == len(set(alone)) == 6
    assert set(alone) == {r for r in sampling_concurrent_requests(16) if r[0] != PROBE_PROMPT}


def test_default_plan_costs_under_20_percent_of_sglangs_single_procedure():
    steps = {s.name: s for s in suite_plans(config())}
    tokens = {name: s.generated_tokens for name, s in steps.items()}
    assert tokens == {
        "Fingerprint": 128,
        "Single": 178 * 64,
        "Mixed": 31 * 64,
        "Prefix": 36 * 64,
        "RadixCache": 16 * (64 + 2 * 4),
        # 4 prompts: 64 tokens generated, then 1 after the prefill of prompt + output.
        "PrefillDecode": 4 * (64 + 1),
        # 2049, 4097 and 8184 tokens alone, then all three and a short one twice: 8 tokens each.
        "LongContext": (3 + 2 * 4) * 8,
        "Concurrent": (4 + 16) * 64,
        # Seeded batches 1..9 and 17, unseeded 1 and 9, 6 requests alone, 16 at once; the
        # seeded probe 4 times through POST /v1/completions.
        "Sampling": (51 + 10 + 6 + 16 + 4) * 64,
        "CrossReplica": 0,
    }
    total = sum(tokens.values())
    assert total == 24_156
    # SGLang's single mode at its defaults generates 100 tokens for 1 + 2 + ... + 50 sequences.
    assert total < 0.20 * 100 * sum(range(1, 51))
    assert sum(s.requests for s in steps.values()) == 162


def test_single_probes_up_to_the_servers_own_maximum_with_few_tokens_past_the_default():
    # The reference engine's default --max-running-requests, and a production SGLang's.
    assert single_batches(config(), server_max=64)[-3:] == [33, 63, 64]
    sizes = single_batches(config(), server_max=512)
    assert sizes[13:] == [63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512]
    assert single_batches(config(), server_max=48)[-1] == 48  # its maximum, no boundary
    assert single_batches(config(), server_max=16)[-1] == 33  # never below the default
    # An explicit bound wins: the server is not asked.
    assert single_batches(config(max_batch_size=9), server_max=512)[-1] == 9
    assert [batch_new_tokens(config(), s) for s in (1, 33, 63, 512)] == [64, 64, 8, 8]


def test_long_context_lengths_cross_each_pinned_tile_and_reach_the_context():
    assert long_context_lengths(8192, 8) == [2049, 4097, 8184]
    assert long_context_lengths(4096, 8) == [2049]  # 4097 does not fit
    assert long_context_lengths(4200, 8) == [2049, 4097, 4192]
    assert long_context_lengths(None, 8) == []
    assert long_context_lengths(1024, 8) == []
    prompt = long_context_prompt("abc", 2049)
    assert len(prompt) == 2049 and prompt == long_context_prompt("abc", 2049)
    assert prompt != long_context_prompt("abd", 2049)  # the run's nonce starts it


def test_plan_of_the_openai_protocol_skips_radix_cache():
    steps = {s.name: s for s in suite_plans(config(protocol="openai", suites=["RadixCache"]))}
    assert steps["RadixCache"].requests == 0 and "skipped" in steps["RadixCache"].what


def test_mixed_batches_send_each_prompt_alone_and_the_probe_among_fillers():
    batches = mixed_batches(16)
    assert [len(b) for b in batches[:6]] == [1, 2, 3, 1, 2, 3]
    assert [b[0] for b in batches[0::3]] == [PROBE_PROMPT, *FILLERS, PROBE_PROMPT, FILLERS[0]]
    for batch in batches:
        if len(batch) > 1:
            assert batch.count(PROBE_PROMPT) == 1
            assert all(p in FILLERS for p in batch if p != PROBE_PROMPT)
    assert {b.index(PROBE_PROMPT) for b in batches if len(b) == 3} == {0, 1, 2}
    assert max(map(len, FILLERS)) > 100 * min(map(len, FILLERS))


def test_prefix_batches_share_prefixes_of_four_lengths():
    assert len(LONG_TEXT) >= max(PREFIX_LENGTHS)
    batches = prefix_batches(12)
    assert [len(b) for b in batches[:4]] == [1, 2, 4, 1]
    for batch in batches:
        assert all(LONG_TEXT.startswith(p) for p in batch)
    assert sorted(len(p) for p in batches[2]) == list(PREFIX_LENGTHS)
    assert sorted(len(b[0]) for b in batches[0::3]) == list(PREFIX_LENGTHS)  # each one alone


def test_concurrent_prompts_alternate_the_probe_and_fillers():
    prompts = concurrent_prompts(6)
    assert prompts[0::2] == [PROBE_PROMPT] * 3
    assert prompts[1::2] == list(FILLERS)


def test_radix_prompts_are_seeded_token_ids():
    assert radix_prompt(42, 0) == radix_prompt(42, 0)
    assert radix_prompt(42, 0) != radix_prompt(42, 1) != radix_prompt(7, 1)
    assert len(radix_prompt(42, 3)) == 64 and all(1 <= t <= 255 for t in radix_prompt(42, 3))


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "url"),
    [
        ("pod-a=http://10.0.0.7:30000", "pod-a", "http://10.0.0.7:30000"),
        ("http://10.0.0.7:30000/", "10.0.0.7:30000", "http://10.0.0.7:30000"),
        ("http://[fd00::7]:30000", "[fd00::7]:30000", "http://[fd00::7]:30000"),
        ("engine.local", None, None),
        ("pod-a=10.0.0.7:30000", None, None),
        ("http://10.0.0.7:30000/generate", None, None),
        ("bad name=http://10.0.0.7:30000", None, None),
        ("http://10.0.0.7:99999", None, None),
    ],
)
def test_endpoints_are_name_equals_url_or_a_bare_url(text, name, url):
    if name is None:
        with pytest.raises(ConfigError, match="--endpoint"):
            EndpointSpec.parse(text)
    else:
        assert EndpointSpec.parse(text) == EndpointSpec(name, url)


def test_two_endpoints_with_one_name_are_refused():
    with pytest.raises(ConfigError, match="'pod-a' is given twice"):
        config(endpoints=["pod-a=http://a:1", "pod-a=http://b:1"])
    with pytest.raises(ConfigError, match="at least one endpoint"):
        config(endpoints=[])


def test_suites_parse_names_all_and_none():
    assert parse_suites("single, RadixCache") == (Suite.SINGLE, Suite.RADIX_CACHE)
    assert parse_suites("none") == ()
    assert parse_suites("all") == tuple(Suite)
    with pytest.raises(ConfigError) as info:
        parse_suites("Single,Fuzz")
    assert "'Fuzz' is not a suite; choose from Single, Mixed, Prefix" in str(info.value)
    assert config(suites=["Single,Mixed", "none", Suite.SINGLE]).suites == (
        Suite.SINGLE,
        Suite.MIXED,
    )


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("trials", 0, "--trials must be a whole number of at least 1, got 0"),
        ("max_new_tokens", 1.5, "--max-new-tokens"),
        ("temperature", -1.0, "--temperature must be from 0 to 100"),
        ("timeout_seconds", 0, "--timeout-seconds must be more than 0"),
        ("expected_fingerprint", "md5:1", "is not sha256:<64 hex>"),
    ],
)
def test_bad_options_name_the_option_and_the_value(option, value, words):
    with pytest.raises(ConfigError) as info:
        config(**{option: value})
    assert words in str(info.value)


def test_the_cheap_option_module_lists_every_protocol():
    assert tuple(p.value for p in Protocol) == PROTOCOLS


# --- comparison ----------------------------------------------------------------------------------


def ids_output(tokens, logprobs=None, finish="length", **kw) -> Output:
    return Output(
        text="".join(chr(97 + t % 26) for t in tokens),
        tokens=tuple(tokens),
        logprobs=None if logprobs is None else tuple(logprobs),
        finish_reason=finish,
        **kw,
    )


LP = [-0.1, -0.2, -0.3, -0.4]


def test_identical_outputs_have_no_divergence():
    assert describe_divergence(ids_output([5, 6, 7, 8], LP), ids_output([5, 6, 7, 8], LP)) is None


def test_a_last_bit_logprob_difference_is_found_while_the_tokens_agree():
    other = [math.nextafter(LP[0], -1.0), *LP[1:]]
    text = describe_divergence(ids_output([5, 6, 7, 8], LP), ids_output([5, 6, 7, 8], other))
    assert text == (
        "logprob of output token 0 (id 5): -0.1 vs -0.10000000000000002 (tokens identical)"
    )


def test_logprobs_that_differ_before_the_tokens_are_both_reported():
    a = ids_output([5, 6, 7, 8], LP)
    b = ids_output([5, 6, 9, 8], [LP[0], -0.25, -0.9, LP[3]])
    assert describe_divergence(a, b) == (
        "logprob of output token 1 (id 6): -0.2 vs -0.25 (tokens identical up to token 2); "
        "output token 2: id 7 vs id 9"
    )


def test_a_logprob_that_differs_only_where_the_token_differs_is_not_reported_twice():
    a = ids_output([5, 6, 7, 8], LP)
    b = ids_output([5, 6, 9, 8], [*LP[:2], -0.9, LP[3]])
    assert describe_divergence(a, b) == "output token 2: id 7 vs id 9"


def test_an_early_stop_is_a_divergence_of_length():
    a = ids_output([5, 6, 7, 8], LP)
    b = ids_output([5, 6], LP[:2], finish="stop")
    assert describe_divergence(a, b) == "4 vs 2 output tokens (finish reason length vs stop)"


def test_prompt_logprobs_are_compared_first():
    a = ids_output([5], [-0.1], input_logprobs=((None, 9), (-1.5, 10)), logprob_start=70)
    b = ids_output([5], [-0.1], input_logprobs=((None, 9), (-1.25, 10)), logprob_start=70)
    assert describe_divergence(a, b) == "logprob at prompt position 71 (id 10): -1.5 vs -1.25"


def test_comparison_is_bitwise():
    assert ids_output([1], [0.0]).key != ids_output([1], [-0.0]).key
    assert ids_output([1], [math.nan]).key == ids_output([1], [math.nan]).key
    assert ids_output([1], [0]).key == ids_output([1], [0.0]).key  # JSON 0 and 0.0: one value
    # A float survives a round trip through JSON unchanged, which the comparison relies on.
    value = math.nextafter(-1.7441731430221978, 0)
    assert json.loads(json.dumps(value)) == value


def test_text_is_the_last_resort():
    a = Output(text="hello world", tokens=None, basis=Basis.TEXT)
    b = Output(text="hello there", tokens=None, basis=Basis.TEXT)
    assert describe_divergence(a, b) == "text differs at character 6: 'world' vs 'there'"
    token_strings = Output(text="ab", tokens=("a", "b"), logprobs=(-1.0, -2.0), basis=Basis.TOKENS)
    other = Output(text="ac", tokens=("a", "c"), logprobs=(-1.0, -3.0), basis=Basis.TOKENS)
    assert describe_divergence(token_strings, other) == "output token 1: token 'b' vs token 'c'"


def test_the_fingerprint_depends_on_token_ids_only():
    outputs = [ids_output([5, 6, 7], LP[:3]), ids_output([9, 9], LP[:2])]
    same_ids = [
        Output(text="other text", tokens=(5, 6, 7), logprobs=(-9.0, -9.0, -9.0), cached_tokens=3),
        Output(text="", tokens=(9, 9), finish_reason="stop", completion_tokens=2),
    ]
    assert fingerprint(outputs) == fingerprint(same_ids)
    assert re.match(FINGERPRINT_PATTERN, fingerprint(outputs))
    assert fingerprint(outputs) != fingerprint([ids_output([5, 6, 8]), ids_output([9, 9])])
    assert fingerprint(outputs) != fingerprint(outputs[::-1])


# --- verdict and summary -------------------------------------------------------------------------


def suite(name, passed=True, endpoints=(), divergence=None) -> SuiteReport:
    return SuiteReport(
        name=name,
        samples=10,
        unique_outputs=1 if passed else 2,
        passed=passed,
        outcome=SuiteOutcome.PASSED if passed else SuiteOutcome.FAILED,
        tokens_compared=10 * 16,
        logprobs_compared=10 * 16,
        first_divergence=divergence,
        failed_endpoints=list(endpoints),
    )


def test_a_failed_suite_decides_before_the_fingerprint():
    verdict, reason, failed, fp = decide(
        config(expected_fingerprint=FP_A),
        [suite("Single"), suite("Mixed", False, ["pod-a"], "mixed batch 1 ...")],
        {"pod-a": FP_A, "pod-b": FP_B},
    )
    assert verdict == Verdict.NOT_DETERMINISTIC
    assert reason == "not deterministic: Mixed: mixed batch 1 ..."
    assert failed == ["pod-a", "pod-b"]  # pod-b: its fingerprint is not the expected one
    assert fp is None


def test_an_unexpected_fingerprint_fails_only_the_endpoints_that_gave_it():
    verdict, reason, failed, fp = decide(
        config(expected_fingerprint=FP_A), [suite("Single")], {"pod-a": FP_A, "pod-b": FP_B}
    )
    assert verdict == Verdict.FINGERPRINT_MISMATCH and failed == ["pod-b"] and fp is None
    assert reason == f"fingerprint mismatch: expected {FP_A}; pod-b gave {FP_B}"


def test_replicas_with_different_fingerprints_all_fail_when_none_is_expected():
    verdict, reason, failed, fp = decide(config(), [], {"pod-a": FP_A, "pod-b": FP_B})
    assert verdict == Verdict.NOT_DETERMINISTIC and failed == ["pod-a", "pod-b"] and fp is None
    assert "different fingerprints" in reason


def test_a_deterministic_verdict_says_what_ran():
    verdict, reason, failed, fp = decide(
        config(), [suite("Fingerprint"), suite("Single")], {"pod-a": FP_A}
    )
    assert (verdict, failed, fp) == (Verdict.DETERMINISTIC, [], FP_A)
    assert reason == (
        "deterministic: 1 suite (Single) gave one output per prompt in 10 samples on pod-a"
    )


def lacking(name, endpoint="pod-b", why="no output tokens in 4 samples") -> SuiteReport:
    return SuiteReport(
        name=name,
        samples=4,
        unique_outputs=1,
        passed=False,
        outcome=SuiteOutcome.COULD_NOT_TEST,
        could_not_test=f"{endpoint}: {why}",
    )


def test_failures_decide_before_could_not_test_and_could_not_test_before_a_pass():
    # A divergence elsewhere in the run still fails it.
    verdict, reason, failed, fp = decide(
        config(),
        [lacking("Fingerprint"), suite("Single", False, ["pod-a"], "batch of 9 ...")],
        {"pod-a": FP_A, "pod-b": None},
    )
    assert (verdict, failed, fp) == (Verdict.NOT_DETERMINISTIC, ["pod-a"], None)
    # So does a fingerprint that is not the expected one, on an endpoint that gave evidence.
    verdict, reason, failed, fp = decide(
        config(expected_fingerprint=FP_B),
        [suite("Fingerprint"), lacking("Single")],
        {"pod-a": FP_A, "pod-b": FP_B},
    )
    assert (verdict, failed) == (Verdict.FINGERPRINT_MISMATCH, ["pod-a"])
    # Otherwise a suite without evidence makes the run "could not test", never a pass.
    verdict, reason, failed, fp = decide(
        config(expected_fingerprint=FP_A),
        [suite("Fingerprint"), lacking("Single"), lacking("Mixed", "pod-a", "all 8 logprobs ...")],
        {"pod-a": FP_A, "pod-b": FP_A},
    )
    assert (verdict, failed, fp) == (Verdict.COULD_NOT_TEST, [], None)
    assert reason == (
        "could not test: Single on pod-b: no output tokens in 4 samples "
        "(and 1 more suite could not test)"
    )


def test_an_endpoint_without_a_fingerprint_leaves_the_run_without_one():
    # pod-b's fingerprint prompts held no evidence: its None is neither a match nor a mismatch.
    verdict, reason, failed, fp = decide(
        config(expected_fingerprint=FP_A),
        [lacking("Fingerprint")],
        {"pod-a": FP_A, "pod-b": None},
    )
    assert (verdict, failed, fp) == (Verdict.COULD_NOT_TEST, [], None)
    assert reason.startswith("could not test: Fingerprint on pod-b: ")


def test_a_skipped_suite_is_not_counted_as_run():
    skipped = SuiteReport(
        name="RadixCache",
        samples=0,
        unique_outputs=0,
        passed=False,
        outcome=SuiteOutcome.SKIPPED,
        skipped="the protocol ...",
    )
    verdict, reason, failed, fp = decide(
        config(), [suite("Fingerprint"), suite("Single"), skipped], {"pod-a": FP_A}
    )
    assert (verdict, failed, fp) == (Verdict.DETERMINISTIC, [], FP_A)
    assert reason.startswith("deterministic: 1 suite (Single)")


def output(tokens, logprobs=None, **kw) -> Output:
    return Output(text="", tokens=tuple(tokens), logprobs=logprobs, **kw)


def test_evidence_allows_what_a_real_model_can_give():
    evidence = Evidence()
    # One prompt, one token per sample: the same logprob every time is what determinism means.
    for _ in range(5):
        evidence.add(("probe",), output([7], (-0.25,)), "a sample")
    assert evidence.missing is None and (evidence.tokens, evidence.logprobs) == (5, 5)
    # The first prompt position has no logprob (nothing before it), and 0.0 is a real value.
    evidence.add(
        ("radix",),
        output([7, 8], (0.0, -1.5), input_logprobs=((None, 3), (-2.0, 4)), logprob_start=0),
        "a prefill",
    )
    assert evidence.missing is None and evidence.logprobs == 5 + 3
    # A server without logprobs is compared on its tokens alone.
    tokens_only = Evidence()
    tokens_only.add(("probe",), output([1, 2, 3]), "a sample")
    assert tokens_only.missing is None and tokens_only.logprobs == 0


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        ([output([])], "no output tokens in 1 samples"),
        (
            [output([1], cut_short="1 of 4 tokens and no finish reason"), output([1, 2, 3, 4])],
            "1 of 2 samples ended early (s: 1 of 4 tokens and no finish reason)",
        ),
        ([output([1, 2], (-1.0, None))], "1 of 2 logprobs are not finite numbers (s: null at"),
        ([output([1, 2], (-1.0, math.inf))], "(s: inf at output token 1)"),
        ([output([1, 2], (-1.0, -1.0)), output([3], (-1.0,))], "all 3 logprobs are the same"),
        (
            [output([1], (-1.0,), input_logprobs=((math.nan, 5),), logprob_start=9)],
            "(s: nan at prompt position 9)",
        ),
    ],
)
def test_evidence_names_what_is_missing(outputs, words):
    evidence = Evidence()
    for i, o in enumerate(outputs):
        evidence.add((i,), o, "s")
    assert words in (evidence.missing or ""), evidence.missing


def test_text_only_outputs_are_evidence_by_their_characters():
    evidence = Evidence()
    evidence.add(("p",), Output(text="abc", tokens=None, basis=Basis.TEXT), "s")
    assert (evidence.missing, evidence.characters, evidence.tokens) == (None, 3, 0)
    empty = Evidence()
    empty.add(("p",), Output(text="", tokens=None, basis=Basis.TEXT), "s")
    assert empty.missing == "no output text in 1 samples"


def test_the_summary_of_the_worst_report_fits_a_termination_message():
    long = "x" * 512
    report = Report(
        verdict=Verdict.NOT_DETERMINISTIC,
        reason="not deterministic: " + "y" * 2000,
        exit_code=1,
        protocol="sglang",
        started_at="2026-01-01T00:00:00+00:00",
        duration_seconds=1.0,
        suites=[suite("Fingerprint")] + [suite(s.value, False, ["p"], long) for s in Suite],
        failed_endpoints=[f"qwen3-8b-7d9f8c6b5-{i:05d}" for i in range(300)],
    )
    text = report.to_summary().to_termination_message()
    assert len(text.encode()) <= 4096
    summary = ValidationSummary.parse(text)
    assert summary.verdict == Verdict.NOT_DETERMINISTIC and summary.exit_code == 1
    assert [s.name for s in summary.suites] == list(Suite)  # the fingerprint step is not a suite


def test_the_docs_show_the_default_plan_as_it_is():
    from detinfer.validator.command import render_plan
    from tests.support.factories import ROOT

    assert render_plan(config()) in (ROOT / "docs" / "validator.md").read_text()


def test_the_validator_has_the_specs_defaults():
    spec = ValidationSpec()
    seed = EngineSpec.model_fields["sampling_seed"].default
    expected = (spec.trials, spec.max_new_tokens, seed, spec.timeout_seconds)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.trials, args.max_new_tokens, args.sampling_seed, args.timeout_seconds) == expected
    made = config()
    assert (made.trials, made.max_new_tokens, made.sampling_seed, made.timeout_seconds) == expected
