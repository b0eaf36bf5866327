"""The validator against SGLang's own procedure, on reference engines: `make bench-validator`.

For each of --engines weight seeds, a default-mode (batch-variant) reference engine is started;
detinfer's validator runs against it, then SGLang's documented `single` and `prefix` procedures
(--sglang-trials each, reimplemented in detinfer.validator.sglang_procedure). A method detects
the engine when it reports nondeterminism (detinfer: verdict NotDeterministic; SGLang: more than
one unique output in either mode). Then the same for deterministic-mode engines, where any
report of nondeterminism is a false alarm. Prints detection and false-alarm rates, generated
tokens and seconds per engine (medians), side by side.

    python -m tests.bench.validator_bench [--engines 20] [--sglang-trials 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

from detinfer.validator import ValidatorConfig, run_validation
from detinfer.validator.sglang_procedure import run_sglang_procedure
from tests.engines import EngineProcess


@dataclass
class Tally:
    runs: int = 0
    flagged: int = 0
    could_not_test: int = 0
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


async def _ours(url: str, a: argparse.Namespace, tally: Tally) -> None:
    started = time.monotonic()
    config = ValidatorConfig(
        endpoints=[f"engine={url}"], trials=a.trials, max_new_tokens=a.max_new_tokens
    )
    report = await run_validation(config)
    tally.runs += 1
    tally.seconds.append(time.monotonic() - started)
    tally.tokens.append(report.generated_tokens)
    if report.verdict.value == "CouldNotTest":
        tally.could_not_test += 1
    elif report.verdict.value != "Deterministic":
        tally.flagged += 1


async def _sglang(url: str, a: argparse.Namespace, tally: Tally) -> None:
    started = time.monotonic()
    tokens, flagged = 0, False
    for mode in ("single", "prefix"):
        result = await run_sglang_procedure(url, mode, trials=a.sglang_trials)
        tokens += result.generated_tokens + result.warmup_generated_tokens
        flagged = flagged or result.unique_outputs > 1
    tally.runs += 1
    tally.seconds.append(time.monotonic() - started)
    tally.tokens.append(tokens)
    tally.flagged += flagged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", type=int, default=20, help="weight seeds per mode")
    p.add_argument("--trials", type=int, default=16, help="detinfer validate --trials")
    p.add_argument("--max-new-tokens", type=int, default=64, help="detinfer validate's")
    p.add_argument("--sglang-trials", type=int, default=50)
    a = p.parse_args(argv)
    tallies = {
        (mode, method): Tally()
        for mode in ("default", "deterministic")
        for method in ("detinfer", "sglang")
    }
    started = time.monotonic()
    for mode in ("default", "deterministic"):
        for seed in range(a.engines):
            with EngineProcess(seed=100 + seed, deterministic=mode == "deterministic") as engine:
                asyncio.run(_ours(engine.url, a, tallies[(mode, "detinfer")]))
                asyncio.run(_sglang(engine.url, a, tallies[(mode, "sglang")]))
            done = sum(t.runs for t in tallies.values()) // 2
            print(
                f"  {mode} engine seed {100 + seed} done ({done} engines, "
                f"{time.monotonic() - started:.0f} s)",
                flush=True,
            )
    print()
    print(
        f"reference engine tiny, {a.engines} weight seeds per mode; detinfer validate "
        f"--trials {a.trials} --max-new-tokens {a.max_new_tokens}; SGLang single + prefix, "
        f"{a.sglang_trials} trials each, 100 new tokens"
    )
    print(
        "| method | detection (default mode) | false alarms (deterministic) | could not test | "
        "generated tokens per engine (median) | seconds per engine (median) |"
    )
    print("|---|---|---|---|---|---|")
    for method in ("detinfer", "sglang"):
        d, n = tallies[("default", method)], tallies[("deterministic", method)]
        tokens = statistics.median(d.tokens + n.tokens)
        seconds = statistics.median(d.seconds + n.seconds)
        print(
            f"| {method} | {d.flagged}/{d.runs} | {n.flagged}/{n.runs} | "
            f"{d.could_not_test + n.could_not_test} | {tokens:.0f} | {seconds:.1f} |"
        )
    ours = statistics.median(
        tallies[("default", "detinfer")].tokens + tallies[("deterministic", "detinfer")].tokens
    )
    theirs = statistics.median(
        tallies[("default", "sglang")].tokens + tallies[("deterministic", "sglang")].tokens
    )
    print(
        f"detinfer used {100 * ours / theirs:.1f}% of the tokens of SGLang's procedure "
        "(target: at most 10%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
