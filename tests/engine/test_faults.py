"""Planted faults (detinfer.engine.faults): each class caught by `detinfer validate`'s suites,
the clean engine passing, and the gaps the new suites close shown open without them.

The fast version of `make bench-faults`: one weight seed per class, every suite at 4 trials and
16 tokens, `--stop-at-first-failure` (the bench runs the defaults over 20 seeds and gives the
rates, docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from bench.faults import CLEAN, engine_args
from detinfer.engine.faults import CLASSES, PlantedFault, parse_fault
from tests.support.engines import EngineProcess
from tests.support.engines import validate as run_validate

SEED = 7
QUICK = ["--trials", "4", "--max-new-tokens", "16", "--wait-seconds", "30"]


def validate(tmp_path: Path, urls: list[str], *args: str) -> tuple[int, dict, str]:
    endpoints = [f"e{i}={u}" for i, u in enumerate(urls)]
    return run_validate(tmp_path, endpoints, *args, quick=QUICK, timeout=900)


def failed(report: dict) -> list[str]:
    return [s["name"] for s in report["suites"] if s["outcome"] == "Failed"]


def engines(fault: str) -> list[EngineProcess]:
    return [EngineProcess(*extra, deterministic=True, seed=SEED) for extra in engine_args(fault)]


@pytest.mark.parametrize("fault", [CLEAN, *CLASSES])
def test_the_suites_catch_every_planted_fault_and_pass_the_clean_engine(tmp_path, fault):
    servers = engines(fault)
    try:
        for s in servers:
            s.start()
        code, report, output = validate(
            tmp_path, [s.url for s in servers], "--stop-at-first-failure"
        )
    finally:
        for s in servers:
            s.stop()
    if fault == CLEAN:
        assert (code, report["verdict"]) == (0, "Deterministic"), output
        assert not failed(report)
        return
    assert (code, report["verdict"]) == (1, "NotDeterministic"), output
    # The reason names the suite and the first divergence.
    assert failed(report) and failed(report)[0] in report["reason"], report["reason"]


@pytest.mark.parametrize(
    ("fault", "without", "with_"),
    [
        # Batches up to 33 (the old bound) miss a change past 100; the server's own maximum
        # (128 here, read from /server_info) finds it.
        (
            "batch-threshold",
            ["--suites", "Single", "--max-batch-size", "33"],
            ["--suites", "Single"],
        ),
        # Decode that is deterministic but not the prefill's arithmetic passes every batch
        # comparison; only PrefillDecode compares the two.
        ("prefill-decode", ["--suites", "Single,RadixCache"], ["--suites", "PrefillDecode"]),
        # Prefix's longest prompt (4,101 tokens here) stays under 6000; LongContext goes past.
        ("long-context", ["--suites", "Prefix"], ["--suites", "LongContext"]),
    ],
)
def test_a_fault_that_escapes_the_other_suites_is_caught_by_its_own(
    tmp_path, fault, without, with_
):
    (server,) = engines(fault)
    with server:
        code, report, output = validate(tmp_path, [server.url], *without)
        assert (code, report["verdict"]) == (0, "Deterministic"), output
        code, report, output = validate(tmp_path, [server.url], *with_)
        assert (code, report["verdict"]) == (1, "NotDeterministic"), output
        assert failed(report) == [with_[1]]


def test_faults_are_named_and_bounded():
    assert parse_fault("drift=5") == PlantedFault("drift", 5)
    assert parse_fault("batch-threshold") == PlantedFault("batch-threshold", 100)
    assert parse_fault("concurrency") == PlantedFault("concurrency")
    for bad, words in (
        ("bogus", "not a planted fault; choose from batch-threshold"),
        ("drift=0", "N (requests) must be a whole number of at least 1"),
        ("drift=x", "N (requests) must be a whole number"),
        ("concurrency=3", "concurrency takes no value"),
    ):
        with pytest.raises(ValueError, match="--planted-fault") as info:
            parse_fault(bad)
        assert words in str(info.value) and repr(bad) in str(info.value)
    assert len(CLASSES) >= 10


def test_planted_kernels_change_bits_only_while_active():
    import torch

    from detinfer.engine.kernels import BatchInvariant, PlantedKernels

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 128, generator=g), torch.randn(128, 64, generator=g)
    inner = BatchInvariant()
    planted = PlantedKernels(inner)
    assert torch.equal(planted.linear(x, w), inner.linear(x, w))
    planted.active = True
    other = planted.linear(x, w)
    # Another order of the same additions: other last bits, the same sums to rounding.
    assert not torch.equal(other, inner.linear(x, w))
    assert torch.allclose(other, inner.linear(x, w), atol=1e-5)
