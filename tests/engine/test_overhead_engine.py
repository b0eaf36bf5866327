"""`detinfer bench` against real reference engines on loopback: one deterministic, one default.

What it checks is what the numbers rest on: every request of the workload reached each engine
(the engines' own counters agree with the workload), the summary parses under the contract, the
table shows every level, and an endpoint that fails makes "could not measure", never figures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from detinfer.api.overhead import OverheadSummary
from tests.support.engines import EngineProcess, free_port

WORKLOAD = [
    "--concurrency",
    "1,3",
    "--requests",
    "4",
    "--input-tokens",
    "24",
    "--output-tokens",
    "8",
    "--rounds",
    "2",
]


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "detinfer.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{name}_total{{") or line.startswith(f"{name}_total ")
    )


def test_bench_measures_both_engines_with_the_same_workload(tmp_path: Path):
    summary_file = tmp_path / "summary.json"
    metrics = "--enable-metrics"
    with EngineProcess(metrics, deterministic=True) as det, EngineProcess(metrics) as base:
        done = bench(
            "--deterministic",
            det.url,
            "--baseline",
            base.url,
            *WORKLOAD,
            "--summary-file",
            str(summary_file),
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "Traceback" not in output
        # 2 levels x 4 requests x 2 rounds = 16 requests of 8 tokens each, plus one warm-up
        # request of 4 tokens: the same on both engines.
        for engine in (det, base):
            assert counter(engine.url, "sglang:generation_tokens") == 16 * 8 + 4
            assert counter(engine.url, "sglang:prompt_tokens") == 16 * 24 + 8
    summary = OverheadSummary.parse(summary_file.read_text())
    assert summary.measured and summary.exit_code == 0
    assert [level.concurrency for level in summary.levels] == [1, 3]
    assert summary.headline_concurrency == 3
    assert summary.headline_percent == summary.levels[1].throughput_overhead_percent
    assert summary.tokens_generated == 2 * 16 * 8
    for level in summary.levels:
        for side in (level.deterministic, level.baseline):
            assert 0 < side.ttft_p50_ms <= side.ttft_p95_ms <= side.e2e_p95_ms
            assert 0 < side.itl_p50_ms <= side.itl_p95_ms
            assert side.tokens_per_second > 0
    for c in ("1", "3"):
        assert re.search(rf"^\s*{c}\s+overhead\s", done.stdout, re.M), done.stdout
    assert "overhead of determinism:" in done.stdout
    # Runs alternate: round 1 deterministic first, round 2 baseline first.
    runs = re.findall(r"concurrency 1, round (\d), (\w+):", done.stdout)
    assert runs == [
        ("1", "deterministic"),
        ("1", "baseline"),
        ("2", "baseline"),
        ("2", "deterministic"),
    ]


def test_an_endpoint_that_fails_is_could_not_measure(tmp_path: Path):
    summary_file = tmp_path / "summary.json"
    closed = f"http://127.0.0.1:{free_port()}"
    with EngineProcess(deterministic=True) as det:
        done = bench(
            "--deterministic",
            det.url,
            "--baseline",
            closed,
            *WORKLOAD,
            "--wait-seconds",
            "1",
            "--summary-file",
            str(summary_file),
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    summary = OverheadSummary.parse(summary_file.read_text())
    assert not summary.measured
    assert summary.headline_percent is None
    assert summary.reason.startswith(f"baseline {closed}: ConnectError"), summary.reason
    assert f"could not measure: baseline {closed}" in done.stdout


def test_an_engine_that_stops_early_is_could_not_measure(tmp_path: Path):
    """More tokens than the model's context allows: the engine refuses, and the bench says which."""
    with EngineProcess(deterministic=True) as det, EngineProcess() as base:
        done = bench(
            "--deterministic",
            det.url,
            "--baseline",
            base.url,
            "--concurrency",
            "1",
            "--requests",
            "1",
            "--rounds",
            "1",
            "--input-tokens",
            "8000",
            "--output-tokens",
            "1000",
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert re.search(
        r"could not measure: deterministic http://\S+: POST /generate answered 400", done.stdout
    ), done.stdout
