"""The validator against SGLang's own procedure, on reference engines: `make bench-validator`.

For each of --engines weight seeds and each mode, a reference engine is started: default mode
(batch-variant kernels) and deterministic mode. Against each engine, with the prefix cache
flushed before each method, run
- detinfer's validator with its default settings (all suites, the fingerprint), and
- SGLang's `single` and `prefix` procedures, --sglang-trials each (reimplemented from 0.5.23's
  test client in bench/sglang_procedure.py: batch sizes 1..trials, 100 new tokens, text
  compared, no warm-up).
A method detects a default-mode engine when it reports nondeterminism (detinfer: verdict
NotDeterministic; SGLang: more than one unique text in either mode); the same report on a
deterministic-mode engine is a false alarm. --jobs engines run at once (a GPU machine runs
several; give each engine its --threads). Every engine's record is appended to --out as one JSON
line as soon as it is done; `--table FILE...` prints the table of saved records (of several
runs together) without running anything. `--methods detinfer` leaves SGLang's procedure out
(on the CPU it takes more than 15 minutes per engine).

    python -m bench.validator [--engines 20] [--jobs 1] [--engine-arg=--device=cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.records import collect
from bench.sglang_procedure import run_sglang_procedure
from detinfer.validator import ValidatorConfig, run_validation
from tests.support.engines import EngineProcess

MODES = ("default", "deterministic")
METHODS = ("detinfer", "sglang")
FIRST_SEED = 100


async def _flush(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        (await http.post("/flush_cache")).raise_for_status()


async def _detinfer(url: str) -> dict[str, Any]:
    started = time.monotonic()
    report = await run_validation(ValidatorConfig(endpoints=[f"engine={url}"]))
    return {
        "verdict": report.verdict.value,
        "reason": report.reason,
        "flagged": report.verdict.value == "NotDeterministic",
        "could_not_test": report.verdict.value == "CouldNotTest",
        "generated_tokens": report.generated_tokens,
        "prompt_tokens": report.prompt_tokens,
        "seconds": round(time.monotonic() - started, 3),
    }


async def _sglang(url: str, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0}
    for mode in ("single", "prefix"):
        await _flush(url)
        started = time.monotonic()
        result = await run_sglang_procedure(url, mode, trials=trials)
        seconds = time.monotonic() - started  # warm-up included: SGLang's client runs it too
        out[mode] = {
            "unique_outputs": result.unique_outputs,
            "unique_token_ids": result.unique_token_ids,
            "generated_tokens": result.generated_tokens + result.warmup_generated_tokens,
            "prompt_tokens": result.prompt_tokens,
            "seconds": round(seconds, 3),
        }
        out["generated_tokens"] += out[mode]["generated_tokens"]
        out["prompt_tokens"] += result.prompt_tokens
        out["seconds"] = round(out["seconds"] + seconds, 3)
    out["flagged"] = any(out[m]["unique_outputs"] > 1 for m in ("single", "prefix"))
    out["could_not_test"] = False
    return out


async def _one_engine(
    mode: str, seed: int, a: argparse.Namespace, slots: asyncio.Semaphore, log_dir: Path
) -> dict[str, Any]:
    async with slots:
        engine = EngineProcess(
            *a.engine_arg,
            seed=seed,
            deterministic=mode == "deterministic",
            log=log_dir / f"engine-{mode}-{seed}.log",
            threads=a.threads,
        )
        await asyncio.to_thread(engine.start, 300.0)
        try:
            await _flush(engine.url)
            record: dict[str, Any] = {"mode": mode, "seed": seed, "threads": a.threads}
            if "detinfer" in a.methods:
                record["detinfer"] = await _detinfer(engine.url)
            if "sglang" in a.methods:
                record["sglang"] = await _sglang(engine.url, a.sglang_trials)
        finally:
            await asyncio.to_thread(engine.stop)
        return record


async def _run(a: argparse.Namespace) -> list[dict[str, Any]]:
    slots = asyncio.Semaphore(a.jobs)
    log_dir = Path(a.out).with_suffix(".logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = [
        _one_engine(mode, a.first_seed + i, a, slots, log_dir)
        for mode in a.modes
        for i in range(a.engines)
    ]
    return await collect(runs, a.out, _describe)


def _describe(record: dict[str, Any]) -> str:
    parts = []
    if d := record.get("detinfer"):
        parts.append(f"detinfer {d['verdict']} ({d['seconds']:.0f} s)")
    if s := record.get("sglang"):
        parts.append(
            f"SGLang unique single {s['single']['unique_outputs']} "
            f"prefix {s['prefix']['unique_outputs']} ({s['seconds']:.0f} s)"
        )
    return f"{record['mode']:13} seed {record['seed']}: {', '.join(parts)}"


def table(records: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table, from engine records."""
    lines = [
        "| method | detection (default-mode engines) | false alarms (deterministic-mode) | "
        "could not test | generated tokens per engine (median) | prompt tokens (median) | "
        "seconds per engine (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for method, label in (
        ("detinfer", "detinfer validate (defaults)"),
        ("sglang", "SGLang single + prefix"),
    ):
        runs = {m: [r[method] for r in records if r["mode"] == m and method in r] for m in MODES}
        every = runs["default"] + runs["deterministic"]
        if not every:
            continue
        medians[method] = statistics.median(r["generated_tokens"] for r in every)
        lines.append(
            f"| {label} | {sum(r['flagged'] for r in runs['default'])}/{len(runs['default'])} "
            f"| {sum(r['flagged'] for r in runs['deterministic'])}/{len(runs['deterministic'])} "
            f"| {sum(r['could_not_test'] for r in every)} | {medians[method]:.0f} "
            f"| {statistics.median(r['prompt_tokens'] for r in every):.0f} "
            f"| {statistics.median(r['seconds'] for r in every):.1f} |"
        )
    for part in ("single", "prefix"):
        runs = {
            m: [r["sglang"][part] for r in records if r["mode"] == m and "sglang" in r]
            for m in MODES
        }
        every = runs["default"] + runs["deterministic"]
        if every:
            lines.append(
                f"| - SGLang {part} alone "
                f"| {sum(r['unique_outputs'] > 1 for r in runs['default'])}/{len(runs['default'])}"
                f" | {sum(r['unique_outputs'] > 1 for r in runs['deterministic'])}/"
                f"{len(runs['deterministic'])} | - "
                f"| {statistics.median(r['generated_tokens'] for r in every):.0f} "
                f"| {statistics.median(r['prompt_tokens'] for r in every):.0f} "
                f"| {statistics.median(r['seconds'] for r in every):.1f} |"
            )
    if len(medians) == 2:
        lines.append("")
        lines.append(
            f"detinfer generated {100 * medians['detinfer'] / medians['sglang']:.1f}% of the "
            "tokens of SGLang's single + prefix procedure (median per engine; target: at most 10%)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", type=int, default=20, help="weight seeds per mode (default 20)")
    p.add_argument("--modes", default=",".join(MODES), help="default,deterministic")
    p.add_argument("--first-seed", type=int, default=FIRST_SEED, help="weight seeds from here")
    p.add_argument("--methods", default=",".join(METHODS), help="detinfer,sglang")
    p.add_argument("--sglang-trials", type=int, default=50)
    p.add_argument("--jobs", type=int, default=1, help="engines at once")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per engine")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="passed to every engine, e.g. --engine-arg=--device=cuda",
    )
    p.add_argument("--out", default="validator-bench.jsonl", help="records (appended)")
    p.add_argument("--table", nargs="+", metavar="FILE", help="only print the table of these")
    a = p.parse_args(argv)
    if a.table:
        records = [json.loads(line) for f in a.table for line in Path(f).read_text().splitlines()]
        print(table(records))
        return 0
    a.modes = [m for m in a.modes.split(",") if m]
    if unknown := set(a.modes) - set(MODES):
        p.error(f"--modes: unknown {sorted(unknown)}; use {','.join(MODES)}")
    a.methods = [m for m in a.methods.split(",") if m]
    if not a.methods or set(a.methods) - set(METHODS):
        p.error(f"--methods: {','.join(a.methods)!r}; use detinfer, sglang or both")
    print(
        f"{a.engines} engines per mode {a.modes}, {a.jobs} at once, {a.threads} threads each, "
        f"engine args {a.engine_arg or 'none'}; methods {a.methods}, SGLang procedure "
        f"{a.sglang_trials} trials; "
        f"records to {a.out}; cpus here {os.cpu_count()}",
        flush=True,
    )
    records = asyncio.run(_run(a))
    print()
    print(table(records))
    return 0 if len(records) == a.engines * len(a.modes) else 1


if __name__ == "__main__":
    sys.exit(main())
