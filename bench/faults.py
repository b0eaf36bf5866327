"""The fault matrix: every planted fault class against `detinfer validate`'s defaults, and SGLang's
own procedure as the anchor: `make bench-faults`.

For each class of detinfer.engine.faults.CLASSES (and `clean`, the deterministic engine with no
fault) and each of --seeds weight seeds, a deterministic reference engine with that fault
planted is started, and `detinfer validate` runs against it with its defaults. replica-skew
plants its fault in a second engine beside a clean one, and the run validates both. The engines
run with --max-running-requests 128 (the validator probes batches up to it, and batch-threshold
strikes past 100). A class is caught when the verdict is NotDeterministic (or, where the run
has an expected fingerprint, FingerprintMismatch); on `clean` that is a false alarm. The table
gives per class the detection rate, the suite that caught it first, one first
divergence, and the median tokens and seconds per run.

--methods sglang adds SGLang's single and prefix procedures (bench/sglang_procedure.py, a
reimplementation of its test client) against the same engine, --sglang-trials each.

Every run's record is appended to --out as a JSON line as soon as it is done; `--table FILE...`
prints the table of saved records without running anything. `--fast` is the CI version: one
seed per class (tests/engine/test_faults.py runs its own).

    python -m bench.faults [--seeds 20] [--jobs 1] [--faults concurrency,drift] [--fast]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.records import collect
from bench.sglang_procedure import run_sglang_procedure
from detinfer.api.status import Verdict
from detinfer.engine.faults import CLASSES
from detinfer.validator import ValidatorConfig, run_validation
from detinfer.validator.report import Report
from tests.support.engines import EngineProcess

CLEAN = "clean"
FIRST_SEED = 300
MAX_RUNNING_REQUESTS = 128
CAUGHT = (Verdict.NOT_DETERMINISTIC, Verdict.FINGERPRINT_MISMATCH)


def fault_names() -> list[str]:
    return [CLEAN, *CLASSES]


def engine_args(fault: str) -> list[list[str]]:
    """The engines of one run: each one's extra arguments."""
    common = ["--max-running-requests", str(MAX_RUNNING_REQUESTS)]
    if fault == CLEAN:
        return [common]
    planted = [*common, "--planted-fault", fault]
    if fault == "replica-skew":
        return [common, planted]
    return [planted]


def caught_by(report: Report) -> list[str]:
    """The suites that failed, in the order they ran."""
    return [s.name for s in report.suites if s.outcome.value == "Failed"]


async def validate(urls: list[str], every_suite: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    endpoints = [f"engine-{i}={u}" for i, u in enumerate(urls)]
    config = ValidatorConfig(endpoints=endpoints, stop_at_first_failure=not every_suite)
    report = await run_validation(config)
    suites = caught_by(report)
    divergence = next(
        (s.first_divergence for s in report.suites if s.first_divergence is not None), None
    )
    return {
        "verdict": report.verdict.value,
        "caught": report.verdict in CAUGHT,
        "could_not_test": report.verdict == Verdict.COULD_NOT_TEST,
        "suites": suites,
        "every_suite": every_suite,
        "first_divergence": divergence,
        "reason": report.reason,
        "generated_tokens": report.generated_tokens,
        "prompt_tokens": report.prompt_tokens,
        "seconds": round(time.monotonic() - started, 3),
    }


async def sglang_anchor(url: str, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {"generated_tokens": 0, "seconds": 0.0}
    for mode in ("single", "prefix"):
        result = await run_sglang_procedure(url, mode, trials=trials)
        out[mode] = result.unique_outputs
        out["generated_tokens"] += result.generated_tokens
        out["seconds"] = round(out["seconds"] + result.seconds, 3)
    out["caught"] = out["single"] > 1 or out["prefix"] > 1
    return out


async def one_run(
    fault: str, seed: int, a: argparse.Namespace, slots: asyncio.Semaphore, logs: Path
) -> dict[str, Any]:
    async with slots, contextlib.AsyncExitStack() as stack:
        engines = []
        for i, extra in enumerate(engine_args(fault)):
            engine = EngineProcess(
                *extra,
                *a.engine_arg,
                seed=seed,
                deterministic=True,
                log=logs / f"{fault}-{seed}-{i}.log",
                threads=a.threads,
            )
            await asyncio.to_thread(engine.start, 300.0)
            stack.callback(engine.stop)
            engines.append(engine)
        record: dict[str, Any] = {"fault": fault, "seed": seed}
        if "detinfer" in a.methods:
            record["detinfer"] = await validate([e.url for e in engines], a.every_suite)
        if "sglang" in a.methods:
            # SGLang's procedure knows one server: the skewed replica is the second.
            record["sglang"] = await sglang_anchor(engines[-1].url, a.sglang_trials)
        return record


async def run_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    slots = asyncio.Semaphore(a.jobs)
    logs = Path(a.out).with_suffix(".logs")
    logs.mkdir(parents=True, exist_ok=True)
    done = {(r["fault"], r["seed"]) for r in read_records(a.skip or [])}
    runs = [
        one_run(fault, a.first_seed + i, a, slots, logs)
        for i in range(a.seeds)
        for fault in a.faults
        if (fault, a.first_seed + i) not in done
    ]
    return await collect(runs, a.out, _describe)


def _describe(record: dict[str, Any]) -> str:
    parts = []
    if d := record.get("detinfer"):
        parts.append(f"{d['verdict']} {','.join(d['suites'])} ({d['seconds']:.0f} s)")
    if s := record.get("sglang"):
        parts.append(
            f"SGLang unique single {s['single']} prefix {s['prefix']} ({s['seconds']:.0f} s)"
        )
    return f"{record['fault']:20} seed {record['seed']}: {'; '.join(parts)}"


def read_records(files: list[str]) -> list[dict[str, Any]]:
    """The records of these files, one per (fault, seed): a method's first result where a run
    was repeated; the methods of separate runs (detinfer's, SGLang's) together."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for f in files:
        for line in Path(f).read_text().splitlines():
            record = json.loads(line)
            merged = seen.setdefault((record["fault"], record["seed"]), {})
            for key, value in record.items():
                merged.setdefault(key, value)
    return list(seen.values())


def _median(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{statistics.median(values):.0f} ({low:.0f}-{high:.0f})"


def table(records: list[dict[str, Any]]) -> str:
    """The fault matrix as a Markdown table."""
    lines = [
        "| fault | runs | detinfer caught | could not test | caught first by | first divergence "
        "(one run) | generated tokens, median (range) | seconds, median (range) | SGLang "
        "single + prefix caught |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fault in fault_names():
        mine = [r for r in records if r["fault"] == fault]
        runs = [r["detinfer"] for r in mine if "detinfer" in r]
        anchor = [r["sglang"] for r in mine if "sglang" in r]
        if not runs and not anchor:
            continue
        firsts = Counter(r["suites"][0] for r in runs if r["suites"])
        example = next((r["first_divergence"] for r in runs if r["first_divergence"]), None)
        example = (example or "-").replace("|", "/")
        if len(example) > 140:
            example = example[:137] + "..."
        caught = sum(r["caught"] for r in runs)
        lines.append(
            f"| {fault} | {len(runs)} | {caught}/{len(runs)} | "
            f"{sum(r['could_not_test'] for r in runs)} | "
            f"{', '.join(f'{s} {n}' for s, n in firsts.most_common()) or '-'} | {example} | "
            f"{_median([r['generated_tokens'] for r in runs])} | "
            f"{_median([r['seconds'] for r in runs])} | "
            + (f"{sum(r['caught'] for r in anchor)}/{len(anchor)}" if anchor else "not run")
            + " |"
        )
    lines.append("")
    lines.append("On `clean`, caught is a false alarm.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="weight seeds per class (default 20)")
    p.add_argument("--first-seed", type=int, default=FIRST_SEED)
    p.add_argument("--faults", default=",".join(fault_names()), help="classes, and clean")
    p.add_argument("--methods", default="detinfer", help="detinfer, sglang or both")
    p.add_argument("--sglang-trials", type=int, default=50)
    p.add_argument("--fast", action="store_true", help="one seed per class (as CI)")
    p.add_argument(
        "--every-suite",
        action="store_true",
        help="run every suite (default: stop at the first that catches, as "
        "--stop-at-first-failure; the verdict is the same, the cost is the cost to it)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per engine")
    p.add_argument("--engine-arg", action="append", default=[], help="passed to every engine")
    p.add_argument("--out", default="faults-bench.jsonl", help="records (appended)")
    p.add_argument("--table", nargs="+", metavar="FILE", help="only print the table of these")
    p.add_argument(
        "--skip", nargs="+", metavar="FILE", help="leave out the runs recorded in these files"
    )
    a = p.parse_args(argv)
    if a.table:
        print(table(read_records(a.table)))
        return 0
    a.faults = [f for f in a.faults.split(",") if f]
    if unknown := set(a.faults) - set(fault_names()):
        p.error(f"--faults: unknown {sorted(unknown)}; choose from {','.join(fault_names())}")
    a.methods = [m for m in a.methods.split(",") if m]
    if not a.methods or set(a.methods) - {"detinfer", "sglang"}:
        p.error(f"--methods {','.join(a.methods)!r}: use detinfer, sglang or both")
    if a.fast:
        a.seeds = 1
    print(
        f"{a.seeds} seeds x {len(a.faults)} classes, {a.jobs} at once, {a.threads} threads per "
        f"engine, engine args {a.engine_arg or 'none'}; methods {a.methods}; records to "
        f"{a.out}; cpus here {os.cpu_count()}",
        flush=True,
    )
    records = asyncio.run(run_all(a))
    print()
    print(table(records))
    return 0 if all(r.get("detinfer", {}).get("could_not_test") is False for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
