"""The overhead benchmark's pure parts: the workload, the figures, the summary contract, the CLI's
refusals (the engine tests run it against real engines)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from detinfer.api.constants import TERMINATION_MESSAGE_LIMIT
from detinfer.api.overhead import (
    MAX_LEVELS,
    REASON_LIMIT,
    OverheadError,
    OverheadSummary,
    OverheadWorkload,
)
from detinfer.overhead.measure import (
    BASELINE,
    DETERMINISTIC,
    TOKEN_ID_RANGE,
    Run,
    level_result,
    order,
    prompts,
)


def run(side: str, round_: int, tokens: int, wall: float, lat: float) -> Run:
    r = Run(side, 4, round_, wall_seconds=wall, tokens=tokens)
    r.ttft = [lat / 10] * 4
    r.itl = [lat / 100] * 4
    r.e2e = [lat] * 4
    return r


def test_workload_defaults_and_refusals():
    w = OverheadWorkload()
    assert (w.concurrency, w.requests, w.rounds) == ([1, 8], 32, 3)
    with pytest.raises(ValidationError, match="repeats a level"):
        OverheadWorkload(concurrency=[4, 4])
    with pytest.raises(ValidationError):
        OverheadWorkload(concurrency=list(range(1, MAX_LEVELS + 2)))
    with pytest.raises(ValidationError):
        OverheadWorkload(concurrency=[0])
    with pytest.raises(ValidationError):
        OverheadWorkload(output_tokens=0)


def test_prompts_are_the_same_for_both_sides_and_new_every_round():
    w = OverheadWorkload(requests=3, input_tokens=16)
    first = prompts(w, 4, 0)
    assert first == prompts(w, 4, 0)
    assert first != prompts(w, 4, 1)
    assert first != prompts(w, 8, 0)
    assert len(first) == 3 and all(len(p) == 16 for p in first)
    assert all(TOKEN_ID_RANGE[0] <= t < TOKEN_ID_RANGE[1] for p in first for t in p)
    assert len({tuple(p) for p in first}) == 3


def test_the_order_alternates():
    assert order(0) == (DETERMINISTIC, BASELINE)
    assert order(1) == (BASELINE, DETERMINISTIC)
    assert order(2) == order(0)


def test_level_figures_and_overheads():
    runs = [
        run(DETERMINISTIC, 0, 100, 2.0, 1.2),  # 50 tokens/s
        run(BASELINE, 0, 100, 1.0, 1.0),  # 100
        run(BASELINE, 1, 100, 1.25, 1.0),  # 80
        run(DETERMINISTIC, 1, 100, 2.5, 1.2),  # 40
        run(DETERMINISTIC, 2, 100, 1.6, 1.2),  # 62.5
        run(BASELINE, 2, 100, 1.0, 1.0),  # 100
    ]
    level = level_result(4, runs)
    assert level.deterministic.tokens_per_second == 50.0  # median of 50, 40, 62.5
    assert level.deterministic.tokens_per_second_spread == 22.5
    assert level.baseline.tokens_per_second == 100.0
    assert level.throughput_overhead_percent == 100.0  # half the speed: twice the time
    assert level.e2e_p50_overhead_percent == 20.0
    assert level.deterministic.e2e_p50_ms == 1200.0
    assert level.deterministic.ttft_p95_ms == 120.0
    assert level.itl_p50_overhead_percent == 20.0


def _full_summary() -> OverheadSummary:
    runs = [
        run(DETERMINISTIC, 0, 10**9, 3.3333333, 123456.789),
        run(BASELINE, 0, 10**9, 1.1111111, 98765.4321),
    ]
    levels = [level_result(c, runs) for c in range(251, 251 + MAX_LEVELS)]
    workload = OverheadWorkload(
        concurrency=list(range(251, 251 + MAX_LEVELS)),
        requests=4096,
        input_tokens=32768,
        output_tokens=32768,
    )
    return OverheadSummary(
        measured=False,
        reason="x" * REASON_LIMIT,
        workload=workload,
        levels=levels,
        headline_percent=-123.45,
        headline_concurrency=256,
        duration_seconds=123456.789,
        tokens_generated=10**15,
    )


def test_the_summary_fits_a_termination_message_at_its_largest():
    summary = _full_summary()
    text = summary.to_termination_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert OverheadSummary.parse(text) == summary


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "left no summary"),
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"schemaVersion": 2}', "schemaVersion 2 is not 1"),
        ('{"schemaVersion": 1, "measured": "maybe", "workload": {}}', "summary field measured"),
    ],
)
def test_a_bad_summary_is_named(text, message):
    with pytest.raises(OverheadError, match=message):
        OverheadSummary.parse(text)


def test_unmeasured_exits_2():
    summary = OverheadSummary(
        measured=False, reason="baseline: refused", workload=OverheadWorkload()
    )
    assert summary.exit_code == 2
    assert json.loads(summary.to_termination_message())["measured"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "1,x"], "--concurrency '1,x': not comma-separated integers"),
        (["--concurrency", "2,2"], "--concurrency '2,2'"),
        (["--requests", "0"], "--requests 0"),
        (["--output-tokens", "0"], "--output-tokens 0"),
    ],
)
def test_the_cli_names_a_bad_argument(args, message):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "detinfer.cli",
            "bench",
            "--deterministic",
            "http://127.0.0.1:9",
            "--baseline",
            "http://127.0.0.1:9",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
