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
        "PrefillDecode",
        "LongContext",
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
    # On each engine: batches of 1 to 33 (178 sequences) at 16 tokens; then, up to the engine's
    # own max_running_requests (64, from /server_info), the probe alone and batches of 63 and
    # 64 at 8 tokens.
    assert single["samples"] == 2 * (178 + 1 + 63 + 64)
    assert single["tokensCompared"] == 2 * (178 * 16 + 128 * 8) == single["logprobsCompared"]
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


@pytest.mark.parametrize(
    ("backend", "code", "verdict"),
    [("tree", 0, "Deterministic"), ("split_kv", 1, "NotDeterministic")],
)
def test_the_validator_passes_tree_attention_and_rejects_the_split_kv_test_case(
    tmp_path, backend, code, verdict
):
    """--attention-backend split_kv claims deterministic mode (and is batch-invariant in every
    other kernel): only its outputs give it away. What the operator's backend search rests on."""
    with EngineProcess("--attention-backend", backend, deterministic=True, seed=42) as engine:
        got, report, output = validate(
            tmp_path,
            "--endpoint",
            engine.url,
            "--expect-deterministic-inference",
            "on",
            "--expect-attention-backend",
            backend,
            "--suites",
            "Single",
            *QUICK,
        )
    assert got == code, output
    assert report["verdict"] == verdict
    single = suite(report, "Single")
    assert single["passed"] is (code == 0)
    assert (single["uniqueOutputs"] == 1) is (code == 0), single


def test_seeded_sampling_passes_in_deterministic_mode_and_fails_in_default_mode(tmp_path):
    with EngineProcess(deterministic=True, seed=42) as engine:
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--suites", "Sampling", *QUICK
        )
    assert code == 0, output
    sampling = suite(report, "Sampling")
    assert sampling["outcome"] == "Passed" and sampling["uniqueOutputs"] == 1
    # 7 seeded batches (1 to 9), 2 unseeded (1 and 9), 2 alone, 4 at once, and the seeded probe
    # 4 times through the OpenAI route (POST /v1/completions): 16 tokens each.
    assert sampling["samples"] == 54
    assert sampling["tokensCompared"] == 54 * 16 == sampling["logprobsCompared"]
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


class BackgroundLoad:
    """Other clients' traffic on one engine: `streams` requests always in flight, until stopped
    or until `max_requests` or `max_seconds`, whichever comes first; each refused /flush_cache
    probe in between is counted, to show that the server was never idle."""

    def __init__(self, url: str, streams: int = 3, max_requests: int = 400, max_seconds=240):
        self.url, self.streams = url, streams
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.stop = threading.Event()
        self.sent = 0
        self.refused_flushes = 0
        self.flushes = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        # Wait until the server really is busy before the validator starts.
        deadline = time.monotonic() + 30
        while self.sent == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        import httpx

        deadline = time.monotonic() + self.max_seconds

        def busy() -> bool:
            return not self.stop.is_set() and time.monotonic() < deadline

        def stream(k: int) -> None:
            # Lengths that differ, so that the streams do not all finish in one step.
            body = {
                "text": "Background traffic of another client, ",
                "sampling_params": {
                    "temperature": 0.7,
                    "max_new_tokens": 41 + 17 * k,
                    "ignore_eos": True,
                },
            }
            with httpx.Client(base_url=self.url, timeout=120, trust_env=False) as client:
                while busy() and self.sent < self.max_requests:
                    self.sent += 1
                    r = client.post("/generate", json=body)
                    if r.status_code != 200:
                        self.errors.append(f"HTTP {r.status_code}: {r.text[:100]}")

        workers = [
            threading.Thread(target=stream, args=(k,), daemon=True) for k in range(self.streams)
        ]
        for w in workers:
            w.start()
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            while busy() and not client.get("/server_info").json()["num_running_reqs"]:
                time.sleep(0.05)
            while busy() and any(w.is_alive() for w in workers):
                self.flushes += 1
                self.refused_flushes += client.post("/flush_cache").status_code == 400
                time.sleep(0.5)
        for w in workers:
            w.join(120)


def test_the_cache_suites_give_a_verdict_on_an_engine_under_traffic(tmp_path):
    # Revalidation of a serving pod: other clients' requests run all the time, so the server
    # refuses every /flush_cache (as SGLang does); the suites must not need one.
    with EngineProcess(deterministic=True, seed=42) as engine, BackgroundLoad(engine.url) as load:
        code, report, output = validate(
            tmp_path,
            "--endpoint",
            f"pod-a={engine.url}",
            "--suites",
            "Prefix,RadixCache",
            "--expect-deterministic-inference",
            "on",
            "--expect-radix-cache",
            "on",
            "--expect-tensor-parallel-size",
            "1",
            *QUICK,
        )
        assert not load.stop.is_set() and load.sent < load.max_requests, "the load ran out"
    assert load.errors == []
    # The server was busy all along: a flush would have been refused (nearly) every time.
    assert load.flushes > 0 and load.refused_flushes >= 0.8 * load.flushes, load.__dict__
    assert code == 0, output
    assert report["verdict"] == "Deterministic"
    assert [suite(report, n)["outcome"] for n in ("Prefix", "RadixCache")] == ["Passed"] * 2
    assert report["server"]["radixCache"] is True
    radix = suite(report, "RadixCache")
    assert any(note.startswith("4 of 4 second prefills used the cache") for note in radix["notes"])


def test_an_engine_that_contradicts_the_spec_fails_without_running_a_suite(tmp_path):
    with EngineProcess(deterministic=False, seed=42) as engine:
        code, report, output = validate(
            tmp_path,
            "--endpoint",
            f"pod-a={engine.url}",
            "--expect-deterministic-inference",
            "on",
            "--expect-radix-cache",
            "off",
            *QUICK,
        )
    assert code == 1, output
    assert report["verdict"] == "ServerMismatch"
    assert report["reason"] == (
        "server mismatch: pod-a: deterministic inference: expected on, found off "
        "(enable_deterministic_inference), radix cache: expected off, found on "
        "(disable_radix_cache); the suites did not run"
    )
    assert report["requests"] == 0 and report["suites"] == []


def test_an_engine_with_the_radix_cache_off_skips_radix_cache(tmp_path):
    with EngineProcess("--disable-radix-cache", deterministic=True, seed=42) as engine:
        code, report, output = validate(
            tmp_path, "--endpoint", engine.url, "--suites", "RadixCache,Prefix", *QUICK
        )
    assert code == 0, output
    radix = suite(report, "RadixCache")
    assert radix["outcome"] == "Skipped" and radix["samples"] == 0
    assert radix["skipped"].startswith("prefix cache off: GET /server_info says")
    assert suite(report, "Prefix")["outcome"] == "Passed"


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


def test_a_swap_behind_the_verdict_fails_the_next_run(tmp_path):
    """Issue #27 on a real engine, the validator's side: a pod passes and records a fingerprint;
    someone holding the admin key swaps its weights; the next run, as the operator's Job makes
    it (the recorded fingerprint, /model_info held to the spec), fails the pod, naming the
    swapped model. Without the /model_info check the outputs alone still fail it."""
    import httpx

    admin = "admin-" + "7" * 20
    client = "client-" + "3" * 20
    with EngineProcess(
        "--api-key", client, "--admin-api-key", admin, deterministic=True, seed=42
    ) as engine:
        env = {**__import__("os").environ, "DETINFER_API_KEY": client}
        expect = ["--expect-model-path", "tiny", "--expect-weight-version", "default"]
        first = subprocess.run(
            [sys.executable, "-m", "detinfer.cli", "validate", "--endpoint", engine.url,
             "--suites", "Single", *QUICK, *expect, "--report", str(tmp_path / "first.json")],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        fingerprint = json.loads((tmp_path / "first.json").read_text())["fingerprint"]
        swap = httpx.post(
            f"{engine.url}/update_weights_from_disk",
            json={"model_path": "tiny@seed=7"},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=60,
        )
        assert swap.status_code == 200 and swap.json()["success"], swap.text
        runs = {}
        for name, extra in (("checked", expect), ("outputs-only", [])):
            report = tmp_path / f"{name}.json"
            done = subprocess.run(
                [sys.executable, "-m", "detinfer.cli", "validate", "--endpoint", engine.url,
                 "--suites", "Single", *QUICK, *extra, "--expected-fingerprint", fingerprint,
                 "--report", str(report)],
                capture_output=True, text=True, timeout=300, env=env,
            )  # fmt: skip
            output = done.stdout + done.stderr
            assert "Traceback" not in output and client not in output and admin not in output
            runs[name] = (done.returncode, json.loads(report.read_text()), output)
    code, report, output = runs["checked"]
    assert code == 1 and report["verdict"] == "ServerMismatch", output
    assert "tiny@seed=7" in output
    code, report, output = runs["outputs-only"]
    assert code == 1 and report["verdict"] == "FingerprintMismatch", output
