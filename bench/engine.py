"""Throughput of the reference engine, default (batch-variant) against deterministic, side by side.

    python -m bench.engine [--device cuda --model-path small --dtype bfloat16]
        [--attention-backends tiled,tree,split_kv] [--workloads 1x64,8x64,32x64,8x16x256]

Each workload is B requests of one prompt length submitted together to the batching engine (no
HTTP), greedy, `ignore_eos`; tokens per second counts generated tokens over the wall time from
submit to the last finish. The engines (default mode, then deterministic mode with each
`--attention-backends` name) alternate within every repeat so drift hits all; the tables show
medians with the range of the repeats, the overhead of deterministic mode with each backend, and
each backend's throughput relative to the first (SGLang measured 34% on average for its own
deterministic mode: LMSYS, September 2025). `split_kv` is the engine's test case that is not
batch-invariant: its distinct-outputs row shows it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

from detinfer.engine.config import ATTENTION_BACKENDS, DEFAULT_ATTENTION_BACKEND, EngineArgs
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


def _cell(rates: list[float]) -> str:
    """median [min-max] of one engine's repeats."""
    return f"{statistics.median(rates):.1f} [{min(rates):.0f}-{max(rates):.0f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-path", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=3, help="weight seed of every engine")
    p.add_argument(
        "--workloads",
        default=",".join(f"{b}x{n}" for b, n in WORKLOADS),
        help="requests x new tokens[x prompt tokens (default --prompt-tokens)], comma separated",
    )
    p.add_argument(
        "--attention-backends",
        default=DEFAULT_ATTENTION_BACKEND,
        help=f"deterministic engines to run side by side, comma separated: some of "
        f"{', '.join(ATTENTION_BACKENDS)} (detinfer engine --attention-backend); the first is the "
        "one the ratios are to",
    )
    a = p.parse_args(argv)
    backends = [b for b in a.attention_backends.split(",") if b]
    unknown = [b for b in backends if b not in ATTENTION_BACKENDS]
    if unknown or not backends or len(set(backends)) != len(backends):
        p.error(
            f"--attention-backends {a.attention_backends!r}: distinct names out of "
            f"{', '.join(ATTENTION_BACKENDS)}"
        )
    workloads = []
    for w in a.workloads.split(","):
        parts = w.split("x")
        if len(parts) not in (2, 3) or not all(v.isdigit() and int(v) > 0 for v in parts):
            p.error(f"--workloads: {w!r} is not requests x tokens[x prompt tokens]")
        requests, new_tokens, *prompt = (int(v) for v in parts)
        workloads.append((requests, new_tokens, prompt[0] if prompt else a.prompt_tokens))
    import torch

    from detinfer.engine.main import build_engine

    # "default" is default mode (its one batch-variant attention); then deterministic mode with
    # each backend.
    engines = {}
    for name in ("default", *backends):
        args = EngineArgs(
            model_path=a.model_path,
            device=a.device,
            dtype=a.dtype,
            random_seed=a.seed,
            enable_deterministic_inference=name != "default",
            attention_backend=DEFAULT_ATTENTION_BACKEND if name == "default" else name,
            disable_radix_cache=True,
            max_running_requests=max(max(b for b, _, _ in workloads), max(BATCH_SIZES)),
        )
        engine, _ = build_engine(args)
        engine.start()
        engines[name] = engine
        _run_batch(engine, 2, a.prompt_tokens, 4)  # warm-up
    device = a.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    print(
        f"reference engine, model {a.model_path} ({a.dtype}), {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median [min-max] of {a.repeats}; the engines "
        "alternate within every repeat"
    )
    first = backends[0]
    rates: dict[tuple[int, int, int], dict[str, list[float]]] = {}
    for workload in workloads:
        requests, new_tokens, prompt_tokens = workload
        rates[workload] = {name: [] for name in engines}
        for _ in range(a.repeats):
            for name, engine in engines.items():
                rates[workload][name].append(
                    _run_batch(engine, requests, prompt_tokens, new_tokens)
                )

    def label(w: tuple[int, int, int]) -> str:
        return f"{w[0]} x {w[1]} (prompt {w[2]})"

    print("\ntokens/s (deterministic mode by --attention-backend):")
    _table(
        ["requests x tokens", "default mode", *backends],
        [[label(w), *(_cell(r[n]) for n in engines)] for w, r in rates.items()],
    )
    print(
        "\noverhead against default mode (its median time per token over default mode's), "
        f"and throughput relative to {first}:"
    )
    _table(
        [
            "requests x tokens",
            *(f"{b} overhead" for b in backends),
            *(f"{b} / {first}" for b in backends[1:]),
        ],
        [
            [
                label(w),
                *(
                    f"{(statistics.median(r['default']) / statistics.median(r[b]) - 1) * 100:.1f}%"
                    for b in backends
                ),
                *(
                    f"{statistics.median(r[b]) / statistics.median(r[first]):.2f}"
                    for b in backends[1:]
                ),
            ]
            for w, r in rates.items()
        ],
    )
    for b in backends:
        overheads = [
            (statistics.median(r["default"]) / statistics.median(r[b]) - 1) * 100
            for r in rates.values()
        ]
        print(
            f"deterministic mode with {b} takes {statistics.mean(overheads):.1f}% longer on "
            "average (time per token; SGLang's deterministic mode: 34.35% on average, LMSYS 2025)"
        )
    print()
    print(f"the same prompt in batches of {', '.join(map(str, BATCH_SIZES))} (64 new tokens each):")
    rows = []
    for name, engine in engines.items():
        samples, ids, logprobs = _distinct(engine, a.prompt_tokens, 64)
        mode = "default mode" if name == "default" else f"deterministic, {name}"
        rows.append([mode, str(samples), str(ids), str(logprobs)])
    _table(["engine", "samples", "distinct token ids", "distinct logprobs"], rows)
    for engine in engines.values():
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
