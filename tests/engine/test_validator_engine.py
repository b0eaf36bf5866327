"""`detinfer validate` as a command against real reference engines on loopback.

The validator's unit tests drive scripted engines (tests/support/fake_engine.py); these run the real
command against the real engine: verdicts and exit codes, CrossReplica, the fingerprint across
replicas, restarts and weights, and the "could not test" cases (exit 2, never a traceback).
Small settings keep each run to seconds; the full default run is measured by the bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from tests.support.engines import EngineProcess, free_port

QUICK = ["--trials", "4", "--max-new-tokens", "16", "--wait-seconds", "30"]


def validate(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
    """Run the command; return its exit code, its JSON report and its output."""
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-m", "detinfer.cli", "validate", "--report", str(report), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return done.returncode, json.loads(report.read_text()), output


def suite(report: dict, name: str) -> dict:
    return next(s for s in report["suites"] if s["name"] == name)


def test_deterministic_engines_pass_every_suite_with_one_output(tmp_path):
    with (
        EngineProcess(deterministic=True, seed=42) as a,
        EngineProcess(deterministic=True, seed=42) as b,
    ):
        code, report, output = validate(
            tmp_path, "--endpoint", f"a={a.url}", "--endpoint", f"b={b.url}", *QUICK
        )
    assert code == 0, output
    assert report["verdict"] == "Deterministic"
    ran = [s for s in report["suites"] if not s.get("skipped")]
    assert {s["name"] for s in ran} >= {
        "Single",
        "Mixed",
        "Prefix",
        "RadixCache",
        "Concurrent",
        "Sampling",
        "CrossReplica",
    }
    assert all(s["uniqueOutputs"] == 1 and s["passed"] for s in ran), ran
    # The pass rests on real outputs: every suite compared tokens and finite, varied logprobs,
    # and no sample stopped before its 16 tokens.
    assert all(s["outcome"] == "Passed" for s in ran), ran
    assert all(s["tokensCompared"] > 0 and s["logprobsCompared"] > 0 for s in ran), ran
    single = suite(report, "Single")
    assert single["tokensCompared"] == single["samples"] * 16 == single["logprobsCompared"]
    assert report["tokensCompared"] > 0 and report["logprobsCompared"] > 0
    assert report["fingerprint"].startswith("sha256:")
    assert {e["fingerprint"] for e in report["endpoints"]} == {report["fingerprint"]}


def test_a_default_mode_engine_fails_and_the_divergence_is_named(tmp_path):
    with EngineProcess(deterministic=False, seed=42) as engine:
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--suites", "Single", *QUICK
        )
    assert code == 1, output
    assert report["verdict"] == "NotDeterministic"
    single = suite(report, "Single")
    assert not single["passed"] and single["uniqueOutputs"] > 1
    # "batch of N, copy i vs batch of M, copy j ...: <what> of output token K ..."
    assert "batch of" in single["firstDivergence"] and "output token" in report["reason"]


def test_seeded_sampling_passes_in_deterministic_mode_and_fails_in_default_mode(tmp_path):
    with EngineProcess(deterministic=True, seed=42) as engine:
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--suites", "Sampling", *QUICK
        )
    assert code == 0, output
    sampling = suite(report, "Sampling")
    assert sampling["outcome"] == "Passed" and sampling["uniqueOutputs"] == 1
    # 7 seeded batches (1 to 9), 2 unseeded (1 and 9), 2 alone, 4 at once: 16 tokens each.
    assert sampling["samples"] == 50
    assert sampling["tokensCompared"] == 50 * 16 == sampling["logprobsCompared"]
    # The engine samples a request without a seed with 42, as SGLang's deterministic mode does.
    assert any("gave the same output as with sampling_seed 42" in n for n in sampling["notes"])

    with EngineProcess(deterministic=False, seed=42) as engine:
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--suites", "Sampling", *QUICK
        )
    assert code == 1, output
    sampling = suite(report, "Sampling")
    assert sampling["outcome"] == "Failed" and sampling["uniqueOutputs"] > 1
    # Default mode ignores the seed: two copies in one batch already differ.
    assert sampling["firstDivergence"].startswith("sampling_seed 42, batch of 2, copy 1 vs ")


def test_cross_replica_fails_when_one_replica_has_other_weights(tmp_path):
    with (
        EngineProcess(deterministic=True, seed=42) as a,
        EngineProcess(deterministic=True, seed=43) as b,
    ):
        code, report, output = validate(
            tmp_path,
            "--endpoint",
            f"a={a.url}",
            "--endpoint",
            f"b={b.url}",
            "--suites",
            "CrossReplica",
            *QUICK,
        )
    assert code == 1, output
    assert report["verdict"] in ("NotDeterministic", "FingerprintMismatch")
    cross = suite(report, "CrossReplica")
    assert not cross["passed"] and cross["firstDivergence"]
    # Each replica is deterministic on its own: each has a fingerprint, and they differ.
    fingerprints = [e["fingerprint"] for e in report["endpoints"]]
    assert all(f and f.startswith("sha256:") for f in fingerprints)
    assert fingerprints[0] != fingerprints[1]
    assert report.get("fingerprint") is None  # the replicas agree on none


def test_the_fingerprint_survives_restarts_and_changes_with_the_weights(tmp_path):
    def fingerprint_run(seed: int, *expected: str) -> tuple[int, dict, str]:
        """A fresh engine process (a restarted pod) with these weights; only the fingerprint."""
        with EngineProcess(deterministic=True, seed=seed) as engine:
            return validate(
                tmp_path,
                "--endpoint",
                engine.url,
                "--suites",
                "none",
                "--wait-seconds",
                "30",
                *expected,
            )

    code, first, output = fingerprint_run(7)
    assert code == 0, output
    fingerprint = first["fingerprint"]
    # The same weights in a new process: the same fingerprint.
    code, again, output = fingerprint_run(7, "--expected-fingerprint", fingerprint)
    assert code == 0, output
    assert again["fingerprint"] == fingerprint
    # Other weights: another fingerprint, and the expected one fails.
    code, other, output = fingerprint_run(8, "--expected-fingerprint", fingerprint)
    assert code == 1, output
    assert other["verdict"] == "FingerprintMismatch"
    assert other["endpoints"][0]["fingerprint"] not in (None, fingerprint)


def test_nothing_listening_could_not_test(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, report, output = validate(tmp_path, "--endpoint", url, "--wait-seconds", "2")
    assert code == 2, output
    assert report["verdict"] == "CouldNotTest"
    assert url.split("//")[1] in report["reason"]


def test_an_engine_that_dies_mid_run_could_not_test(tmp_path):
    engine = EngineProcess(deterministic=True, seed=42).start()
    try:
        # Kill the engine once the run is under way (its first requests take seconds).
        killer = threading.Timer(3.0, engine.stop, kwargs={"sig": 9})
        killer.start()
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--request-timeout-seconds", "20"
        )
        killer.join()
    finally:
        engine.stop()
    assert code == 2, output
    assert report["verdict"] == "CouldNotTest"
    assert report["reason"], report
