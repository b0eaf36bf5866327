"""`detinfer bench`: the cost of determinism between two endpoints, as a table.

    detinfer bench --deterministic http://10.0.0.5:30000 --baseline http://10.0.0.6:30000 \
        --concurrency 1,8 --requests 32 --input-tokens 256 --output-tokens 128 --rounds 3

Exit 0: measured; 2: could not measure (an endpoint failed or refused the client key; the reason
names it). A key-protected engine's key comes from DETINFER_API_KEY or --api-key-file
(detinfer.client_key), never from an argument. The summary
(JSON, under 4096 bytes) goes to --summary-file when given: the benchmark Job points it at
/dev/termination-log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from detinfer import client_key
from detinfer.api.overhead import LevelResult, OverheadSummary, OverheadWorkload
from detinfer.overhead.measure import BASELINE, DETERMINISTIC, Progress, Run, measure

COLUMNS = (
    "concurrency",
    "endpoint",
    "TTFT p50/p95 ms",
    "ITL p50/p95 ms",
    "E2E p50/p95 ms",
    "tokens/s (spread)",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = OverheadWorkload()
    parser.add_argument(
        "--deterministic",
        required=True,
        metavar="URL",
        help="base URL of the engine with --enable-deterministic-inference",
    )
    parser.add_argument(
        "--baseline", required=True, metavar="URL", help="base URL of the same engine without it"
    )
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, defaults.concurrency)),
        help="comma-separated concurrency levels (default %(default)s)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        help="requests per level, round and endpoint (default %(default)s)",
    )
    parser.add_argument(
        "--input-tokens",
        type=int,
        default=defaults.input_tokens,
        help="prompt tokens per request (default %(default)s)",
    )
    parser.add_argument(
        "--output-tokens",
        type=int,
        default=defaults.output_tokens,
        help="generated tokens per request (default %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=defaults.rounds,
        help="rounds per level, the endpoints' order alternating (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the prompts' token ids (default %(default)s)",
    )
    parser.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wait this long for each endpoint's GET /health to answer 200 (default %(default)s)",
    )
    parser.add_argument(
        "--summary-file",
        type=Path,
        default=None,
        help="write the JSON summary here (the Job: /dev/termination-log)",
    )
    client_key.add_argument(parser)


def workload_from(args: argparse.Namespace) -> OverheadWorkload:
    """The workload the arguments describe; ValueError names the argument and the value."""
    try:
        levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--concurrency {args.concurrency!r}: not comma-separated integers"
        ) from None
    try:
        return OverheadWorkload(
            concurrency=levels,
            requests=args.requests,
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
            rounds=args.rounds,
            seed=args.seed,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "concurrency"
        flag = "--" + field.replace("_", "-")
        value = getattr(args, field, args.concurrency)
        raise ValueError(f"{flag} {value!r}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    try:
        workload = workload_from(args)
        key = client_key.read_client_key(args.api_key_file)
    except ValueError as exc:  # ClientKeyError included: it names the path, never the key
        print(f"detinfer bench: {exc}", file=sys.stderr)
        return 2
    endpoints = {DETERMINISTIC: args.deterministic, BASELINE: args.baseline}
    progress = _progress(sys.stdout)
    if key is not None:
        print(f"detinfer bench: {key}")
    summary = asyncio.run(
        measure(endpoints, workload, args.request_timeout, progress, args.wait_seconds, key)
    )
    print(render(summary, endpoints))
    if args.summary_file is not None:
        args.summary_file.write_text(summary.to_termination_message())
    return summary.exit_code


def _cells(level: LevelResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for side, f in ((DETERMINISTIC, level.deterministic), (BASELINE, level.baseline)):
        rows.append(
            (
                str(level.concurrency),
                side,
                f"{f.ttft_p50_ms:.1f} / {f.ttft_p95_ms:.1f}",
                f"{f.itl_p50_ms:.2f} / {f.itl_p95_ms:.2f}",
                f"{f.e2e_p50_ms:.1f} / {f.e2e_p95_ms:.1f}",
                f"{f.tokens_per_second:.1f} ({f.tokens_per_second_spread:.1f})",
            )
        )
    rows.append(
        (
            str(level.concurrency),
            "overhead",
            f"{level.ttft_p50_overhead_percent:+.1f}%",
            f"{level.itl_p50_overhead_percent:+.1f}%",
            f"{level.e2e_p50_overhead_percent:+.1f}%",
            f"{level.throughput_overhead_percent:+.1f}%",
        )
    )
    return rows


def render(summary: OverheadSummary, endpoints: dict[str, str]) -> str:
    """The summary as a plain table and a few lines."""
    rows = [COLUMNS, *(row for level in summary.levels for row in _cells(level))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(widths[i]) if i == 1 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in rows
    ]
    w = summary.workload
    lines += [
        "",
        f"{DETERMINISTIC}: {endpoints[DETERMINISTIC]}; {BASELINE}: {endpoints[BASELINE]}",
        f"workload: {w.requests} requests x {w.rounds} rounds per level and endpoint, "
        f"{w.input_tokens} prompt tokens, {w.output_tokens} generated (greedy, ignore_eos); "
        f"{summary.tokens_generated} tokens in {summary.duration_seconds:.1f} s",
    ]
    if summary.measured:
        lines.append(
            f"overhead of determinism: {summary.headline_percent:+.1f}% throughput at "
            f"concurrency {summary.headline_concurrency} "
            "(baseline tokens/s / deterministic tokens/s - 1; medians over the rounds)"
        )
    else:
        lines.append(f"could not measure: {summary.reason}")
    return "\n".join(lines)


class _PlainProgress(Progress):
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def run_done(self, run: Run) -> None:
        print(
            f"concurrency {run.concurrency}, round {run.round + 1}, {run.side}: "
            f"{run.tokens_per_second:.1f} tokens/s over {run.wall_seconds:.1f} s",
            file=self.stream,
            flush=True,
        )


class _RichProgress(Progress):
    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.console = console
        self.bar = Bar(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: Any = None

    def start(self, total_requests: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("requests", total=total_requests)

    def request_done(self) -> None:
        self.bar.advance(self.task)

    def run_done(self, run: Run) -> None:
        self.bar.console.log(
            f"concurrency {run.concurrency}, round {run.round + 1}, {run.side}: "
            f"{run.tokens_per_second:.1f} tokens/s"
        )

    def stop(self) -> None:
        self.bar.stop()


def _progress(stream: IO[str]) -> Progress:
    if stream.isatty():
        try:
            from rich.console import Console
        except ImportError:
            return _PlainProgress(stream)
        return _RichProgress(Console(file=stream))
    return _PlainProgress(stream)
