"""Throughput of the reference engine, default (batch-variant) against deterministic, side by side.

    python -m bench.engine [--device cuda --model-path small --dtype bfloat16]

Each workload is B requests of one prompt length submitted together to the batching engine (no
HTTP), greedy, `ignore_eos`; tokens per second counts generated tokens over the wall time from
submit to the last finish. The two modes alternate within every repeat so drift hits both; the
table shows medians and the overhead of deterministic mode (SGLang measured 34% on average for
its own deterministic mode: LMSYS, September 2025).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

from detinfer.engine.config import EngineArgs
from detinfer.engine.sampling import SamplingParams

WORKLOADS = ((1, 64), (8, 64), (32, 64))  # (requests, new tokens)
# Batch sizes across the boundaries where kernels change their split (as the validator probes).
BATCH_SIZES = (1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33)


def _run_batch(
    engine, requests: int, prompt_len: int, new_tokens: int, same_prompt: bool = False
) -> float:
    from detinfer.engine.scheduler import Request

    done = threading.Semaphore(0)

    def emit(event) -> None:
        if event.kind in ("finish", "error"):
            done.release()

    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    batch = [
        Request(
            prompt=[((0 if same_prompt else i) * 7 + j) % 256 for j in range(prompt_len)],
            params=params,
            emit=emit,
            return_logprob=True,
        )
        for i in range(requests)
    ]
    engine.flush_cache()
    started = time.perf_counter()
    engine.submit(batch)
    for _ in batch:
        done.acquire()
    elapsed = time.perf_counter() - started
    if any(len(r.output) != new_tokens for r in batch):
        raise RuntimeError("a request ended early or failed")
    _run_batch.last = batch
    return requests * new_tokens / elapsed


def _distinct(engine, prompt_len: int, new_tokens: int) -> tuple[int, int, int]:
    """The same prompt in batches of BATCH_SIZES: (samples, distinct token ids, distinct logprobs)."""
    ids, logprobs, samples = set(), set(), 0
    for size in BATCH_SIZES:
        _run_batch(engine, size, prompt_len, new_tokens, same_prompt=True)
        for r in _run_batch.last:
            samples += 1
            ids.add(tuple(r.output))
            logprobs.add(tuple(r.output_logprobs))
    return samples, len(ids), len(logprobs)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-path", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=3, help="weight seed of both engines")
    p.add_argument(
        "--workloads",
        default=",".join(f"{b}x{n}" for b, n in WORKLOADS),
        help="requests x new tokens, comma separated",
    )
    a = p.parse_args(argv)
    import torch

    from detinfer.engine.main import build_engine

    workloads = [tuple(int(v) for v in w.split("x")) for w in a.workloads.split(",")]
    engines = {}
    for deterministic in (False, True):
        args = EngineArgs(
            model_path=a.model_path,
            device=a.device,
            dtype=a.dtype,
            random_seed=a.seed,
            enable_deterministic_inference=deterministic,
            disable_radix_cache=True,
            max_running_requests=max(max(b for b, _ in workloads), max(BATCH_SIZES)),
        )
        engine, _ = build_engine(args)
        engine.start()
        engines[deterministic] = engine
        _run_batch(engine, 2, a.prompt_tokens, 4)  # warm-up
    device = a.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    print(
        f"reference engine, model {a.model_path} ({a.dtype}), {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, prompt {a.prompt_tokens} tokens, "
        f"median of {a.repeats}"
    )
    print(
        f"| {'requests x tokens':>17} | {'default tok/s':>13} | {'deterministic tok/s':>19} | "
        f"{'overhead':>8} |"
    )
    print(f"|{'-' * 19}|{'-' * 15}|{'-' * 21}|{'-' * 10}|")
    overheads = []
    for requests, new_tokens in workloads:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(a.repeats):
            for deterministic, engine in engines.items():
                rates[deterministic].append(
                    _run_batch(engine, requests, a.prompt_tokens, new_tokens)
                )
        default, det = statistics.median(rates[False]), statistics.median(rates[True])
        overhead = (default / det - 1) * 100
        overheads.append(overhead)
        print(
            f"| {f'{requests} x {new_tokens}':>17} | {default:>13.1f} | {det:>19.1f} | "
            f"{overhead:>7.1f}% |"
        )
    print(
        f"deterministic mode takes {statistics.mean(overheads):.1f}% longer on average "
        "(time per token; SGLang's deterministic mode: 34.35% on average, LMSYS 2025)"
    )
    print()
    print(f"the same prompt in batches of {', '.join(map(str, BATCH_SIZES))} (64 new tokens each):")
    print(
        f"| {'mode':>13} | {'samples':>7} | {'distinct token ids':>18} | "
        f"{'distinct logprobs':>17} |"
    )
    print(f"|{'-' * 15}|{'-' * 9}|{'-' * 20}|{'-' * 19}|")
    for deterministic, engine in engines.items():
        samples, ids, logprobs = _distinct(engine, a.prompt_tokens, 64)
        mode = "deterministic" if deterministic else "default"
        print(f"| {mode:>13} | {samples:>7} | {ids:>18} | {logprobs:>17} |")
    for engine in engines.values():
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
