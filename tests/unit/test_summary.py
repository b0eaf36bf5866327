"""The validator-operator contract: one schema, under 4096 bytes, strict parsing."""

from __future__ import annotations

import json

import pytest

from detinfer.api import SuiteOutcome, SuiteResult, SummaryError, ValidationSummary, Verdict
from detinfer.api.status import ServerFacts
from tests.support import factories as f


def test_round_trip_and_exit_codes():
    summary = ValidationSummary.parse(f.summary())
    assert summary.verdict == Verdict.DETERMINISTIC and summary.exit_code == 0
    assert ValidationSummary.parse(summary.to_termination_message()) == summary
    assert Verdict.NOT_DETERMINISTIC.exit_code == 1
    assert Verdict.FINGERPRINT_MISMATCH.exit_code == 1
    assert Verdict.SERVER_MISMATCH.exit_code == 1
    assert Verdict.COULD_NOT_TEST.exit_code == 2


def test_each_verdict_names_its_condition_reason_and_could_not_test_is_could_not_validate():
    assert {v.value: v.condition_reason for v in Verdict} == {
        "Deterministic": "Deterministic",
        "NotDeterministic": "NotDeterministic",
        "FingerprintMismatch": "FingerprintMismatch",
        "ServerMismatch": "ServerMismatch",
        "CouldNotTest": "CouldNotValidate",
    }


def test_a_summary_refuses_a_suite_that_is_not_a_suite():
    # The report may name its fingerprint step as a suite; the summary and the status may not.
    with pytest.raises(SummaryError, match=r"summary field suites\.0\.name"):
        ValidationSummary.parse(
            json.dumps(
                {
                    "schemaVersion": 1,
                    "verdict": "Deterministic",
                    "suites": [
                        {"name": "Fingerprint", "samples": 4, "uniqueOutputs": 1, "passed": True}
                    ],
                }
            )
        )


def test_huge_summaries_are_cut_to_the_termination_message_limit():
    summary = ValidationSummary(
        verdict=Verdict.NOT_DETERMINISTIC,
        reason="x" * 1024,
        suites=[
            SuiteResult(
                name=name, samples=128, unique_outputs=7, passed=False, first_divergence="y" * 512
            )
            for name in ("Single", "Mixed", "Prefix", "RadixCache", "Concurrent", "CrossReplica")
        ],
        failed_endpoints=[f"a-very-long-deployment-name-abcdef-{i:05d}" for i in range(200)],
    )
    text = summary.to_termination_message()
    assert len(text.encode()) <= 4096
    parsed = ValidationSummary.parse(text)
    assert parsed.verdict == Verdict.NOT_DETERMINISTIC
    assert len(parsed.suites) == 6 and all(s.unique_outputs == 7 for s in parsed.suites)
    assert "200 endpoints failed" in parsed.reason


@pytest.mark.parametrize("outcome", [SuiteOutcome.FAILED, SuiteOutcome.COULD_NOT_TEST])
def test_the_evidence_of_every_suite_fits_with_the_most_endpoints(outcome):
    # 64 replicas (the most spec.replicas allows) of the longest pod names, every text at its
    # limit, every count at 12 digits: the suites' evidence must survive the cut.
    names = [f"{'a' * 240}-{i:05d}" for i in range(64)]
    summary = ValidationSummary(
        verdict=Verdict.NOT_DETERMINISTIC,
        reason="x" * 1024,
        fingerprint="sha256:" + "f" * 64,
        compared_on="tokenIds+logprobs",
        tokens_compared=10**12 - 1,
        logprobs_compared=10**12 - 1,
        characters_compared=10**12 - 1,
        suites=[
            SuiteResult(
                name=name,
                samples=10**12 - 1,
                unique_outputs=10**6,
                passed=False,
                first_divergence="y" * 512,
                outcome=outcome,
                tokens_compared=10**12 - 1,
                logprobs_compared=10**12 - 1,
                characters_compared=10**12 - 1,
                reason="z" * 512,
            )
            for name in ("Single", "Mixed", "Prefix", "RadixCache", "Concurrent", "CrossReplica")
        ],
        failed_endpoints=names,
        # What the servers reported, every text at its limit.
        server=ServerFacts(
            version="v" * 64,
            attention_backend="b" * 64,
            deterministic_inference=True,
            radix_cache=False,
            tensor_parallel_size=16,
        ),
    )
    text = summary.to_termination_message()
    assert len(text.encode()) <= 4096
    parsed = ValidationSummary.parse(text)
    assert parsed.server == summary.server
    assert [s.outcome for s in parsed.suites] == [outcome] * 6
    assert all(s.tokens_compared == s.logprobs_compared == 10**12 - 1 for s in parsed.suites)
    assert parsed.tokens_compared == 10**12 - 1 and parsed.compared_on == "tokenIds+logprobs"
    assert all(s.reason and s.first_divergence for s in parsed.suites)
    assert "64 endpoints failed" in parsed.reason


def test_one_output_of_nothing_is_not_shown_as_unique_outputs():
    def result(name, unique, outcome):
        return SuiteResult(
            name=name, samples=4, unique_outputs=unique, passed=False, outcome=outcome
        )

    lacking = result("Single", 1, SuiteOutcome.COULD_NOT_TEST)
    summary = ValidationSummary(verdict=Verdict.COULD_NOT_TEST, suites=[lacking])
    assert summary.max_unique_outputs is None
    failed = result("Mixed", 3, SuiteOutcome.FAILED)
    summary = ValidationSummary(verdict=Verdict.NOT_DETERMINISTIC, suites=[lacking, failed])
    assert summary.max_unique_outputs == 3


def test_small_summaries_are_not_cut():
    summary = ValidationSummary.parse(f.summary())
    assert json.loads(summary.to_termination_message())["reason"] == "all suites gave one output"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "left no summary"),
        ("  ", "left no summary"),
        ("{", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"verdict": "Deterministic"}', "schemaVersion None is not 1"),
        ('{"schemaVersion": 1, "verdict": "Maybe"}', "summary field verdict"),
        (
            '{"schemaVersion": 1, "verdict": "Deterministic", "fingerprint": "md5:1"}',
            "summary field fingerprint",
        ),
        ('{"schemaVersion": 1, "verdict": "Deterministic", "tokensUsed": -1}', "tokensUsed"),
    ],
)
def test_bad_summaries_say_what_is_wrong(text, words):
    with pytest.raises(SummaryError) as info:
        ValidationSummary.parse(text)
    assert words in str(info.value)
