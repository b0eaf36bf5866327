"""Is `detinfer bench`'s overhead right? It against bench.engine's in-process figure, one run.

    python -m bench.overhead [--model-path tiny] [--workloads 1x64,8x64] [--repeats 5]

For each workload (B requests x N new tokens, prompt P tokens) two measurements of the same
reference engine in its two modes, back to back on this machine:

- in-process, as `make bench-engine` does: B requests submitted together to the batching engine,
  tokens/s from submit to the last finish, the two modes alternating within every repeat, after
  one discarded batch of each shape per mode (a GPU's first run of a shape is slower);
- over HTTP, as `detinfer bench` (and the benchmark Job) does: two engine servers on loopback,
  concurrency B, B streaming requests per round, two rounds per repeat in ABBA order, after one
  discarded round of each workload.

Each repeat gives one overhead figure per method (baseline tokens/s / deterministic - 1); the
table shows the median and the range over the repeats, and whether the two ranges overlap.
HTTP adds the same per-token cost to both sides, so over HTTP the relative overhead can only
be equal or smaller: the gap is what a client of a server would see of the kernels' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Sequence

from bench.engine import _run_batch
from detinfer.api.overhead import OverheadWorkload
from detinfer.engine.config import EngineArgs
from detinfer.overhead.measure import BASELINE, DETERMINISTIC, measure
from tests.support.engines import EngineProcess


def in_process(
    model: str, workloads, prompt: int, repeats: int, seed: int, device: str, dtype: str
) -> dict:
    from detinfer.engine.main import build_engine

    engines = {}
    for deterministic in (False, True):
        args = EngineArgs(
            model_path=model,
            device=device,
            dtype=dtype,
            random_seed=seed,
            enable_deterministic_inference=deterministic,
            disable_radix_cache=True,
            max_running_requests=max(b for b, _ in workloads),
        )
        engine, _ = build_engine(args)
        engine.start()
        engines[deterministic] = engine
        _run_batch(engine, 2, prompt, 4)  # warm-up
    out = {}
    for requests, tokens in workloads:
        figures = []
        # A first batch of a new shape pays for kernel selection and allocation on a GPU: one
        # discarded run of each side first, so that the first measured side does not.
        for deterministic in (False, True):
            _run_batch(engines[deterministic], requests, prompt, tokens)
        for _ in range(repeats):
            base = _run_batch(engines[False], requests, prompt, tokens)
            det = _run_batch(engines[True], requests, prompt, tokens)
            figures.append((base / det - 1) * 100)
        out[(requests, tokens)] = figures
    for engine in engines.values():
        engine.stop()
    return out


def over_http(
    model: str, workloads, prompt: int, repeats: int, seed: int, device: str, dtype: str
) -> dict:
    common = ["--model-path", model, "--device", device, "--dtype", dtype, "--disable-radix-cache"]
    out = {}
    with (
        EngineProcess(*common, deterministic=True, seed=seed) as det,
        EngineProcess(*common, seed=seed) as base,
    ):
        # EngineProcess passes --model-path tiny first; the later flag wins.
        endpoints = {DETERMINISTIC: det.url, BASELINE: base.url}
        for requests, tokens in workloads:
            workload = OverheadWorkload(
                concurrency=[requests],
                requests=requests,
                input_tokens=prompt,
                output_tokens=tokens,
                rounds=2,
            )
            figures = []
            # One discarded round first (both sides), as in-process: a new shape's first run
            # pays for kernel selection and allocation.
            asyncio.run(measure(endpoints, workload.model_copy(update={"rounds": 1})))
            for repeat in range(repeats):
                w = workload.model_copy(update={"seed": repeat})
                summary = asyncio.run(measure(endpoints, w))
                if not summary.measured:
                    raise SystemExit(f"could not measure: {summary.reason}")
                figures.append(summary.levels[0].throughput_overhead_percent)
            out[(requests, tokens)] = figures
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-path", default="tiny")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=3, help="weight seed of both engines")
    p.add_argument(
        "--workloads", default="1x64,8x64", help="requests x new tokens, comma separated"
    )
    a = p.parse_args(argv)
    import torch

    workloads = [tuple(int(v) for v in w.split("x")) for w in a.workloads.split(",")]
    local = in_process(
        a.model_path, workloads, a.prompt_tokens, a.repeats, a.seed, a.device, a.dtype
    )
    http = over_http(a.model_path, workloads, a.prompt_tokens, a.repeats, a.seed, a.device, a.dtype)
    device = a.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    print(
        f"reference engine, model {a.model_path} ({a.dtype}), {device}, torch {torch.__version__}, prompt "
        f"{a.prompt_tokens} tokens, {a.repeats} repeats; overhead = baseline tokens/s / "
        "deterministic tokens/s - 1: median [min, max]"
    )
    print(
        f"| {'requests x tokens':>17} | {'in-process (bench-engine)':>25} | "
        f"{'HTTP (detinfer bench)':>25} | ranges overlap |"
    )
    print(f"|{'-' * 19}|{'-' * 27}|{'-' * 27}|{'-' * 16}|")
    for w in workloads:
        a_, b_ = local[w], http[w]

        def cell(v: list[float]) -> str:
            return f"{statistics.median(v):+.1f}% [{min(v):+.1f}, {max(v):+.1f}]"

        overlap = max(min(a_), min(b_)) <= min(max(a_), max(b_))
        print(
            f"| {f'{w[0]} x {w[1]}':>17} | {cell(a_):>25} | {cell(b_):>25} | "
            f"{'yes' if overlap else 'no':>14} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
