"""Reads the stack samples of bench/sampler (the operator under `bench.operator --profile`) and
prints where each group of threads spent its wall-clock time: the functions on the stack
(inclusive share of the group's samples), the innermost frame by kind (waiting on the network,
idle, or running), each group's CPU seconds, and how late the sampler's own wake-ups came.

    python -m bench.profile_report ~/.cache/detinfer/bench-operator.samples.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from detinfer.percentile import percentile

# The innermost frames that mean a thread is not running Python: (file pattern, function).
WAITING = {
    "network": [
        ("ssl.py", "read"),
        ("ssl.py", "recv_into"),
        ("socket.py", "readinto"),
        ("ssl.py", "do_handshake"),
        ("socket.py", "create_connection"),
        ("ssl.py", "sendall"),
    ],
    "idle": [
        ("threading.py", "wait"),
        ("queue.py", "get"),
        ("thread.py", "_worker"),
        ("selectors.py", "select"),
        ("threading.py", "_wait_for_tstate_lock"),
    ],
}


def group(thread: str) -> str:
    """Threads by role: the pool's workers share one group whatever their number."""
    return re.sub(r"_\d+$", "_N", re.sub(r"-\d+", "-N", thread))


def kind(frame: str) -> str:
    path, func, _ = frame.rsplit(":", 2)
    for name, pairs in WAITING.items():
        if any(path.endswith(p) and func == f for p, f in pairs):
            return name
    return "running"


def short(frame: str) -> str:
    path, func, _ = frame.rsplit(":", 2)
    for marker in ("/detinfer/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{func}"


def summarize(body: dict[str, Any], top: int = 25) -> str:
    samples: dict[str, int] = Counter()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    for thread, stack, n in body["stacks"]:
        g = group(thread)
        samples[g] += n
        kinds[g][kind(stack[-1]) if stack else "idle"] += n
        for f in {short(s) for s in stack}:
            inclusive[g][f] += n
    lines = [f"{body['seconds']:.0f} s sampled every {body['interval'] * 1000:.0f} ms"]
    late = body["lateness"]
    if late:
        lines.append(
            f"sampler wake-up lateness (GIL and CPU wait): p50 {percentile(late, 50) * 1000:.1f} ms,"
            f" p99 {percentile(late, 99) * 1000:.1f} ms, max {max(late) * 1000:.0f} ms"
        )
    cpu: Counter[str] = Counter()
    for thread, secs in body["thread_cpu"].items():
        cpu[group(thread)] += secs
    lines.append(
        "CPU seconds by thread group: " + ", ".join(f"{g} {s:.1f}" for g, s in cpu.most_common())
    )
    lines.append(f"\n{call_sites(body)}")
    for g, n in samples.most_common():
        share = ", ".join(f"{k} {c / n:.0%}" for k, c in kinds[g].most_common())
        lines.append(f"\n{g}: {n} samples ({share})")
        for f, c in inclusive[g].most_common(top):
            lines.append(f"  {c / n:6.1%}  {f}")
    return "\n".join(lines)


def call_sites(body: dict[str, Any], top: int = 12) -> str:
    """The workers' time inside a reconciliation (controller/sync.py:sync), by the innermost
    detinfer frame and whether that frame waits on the network: which API call the time is
    spent in, or whether it waits for another thread's pass of the same resource (the lock)."""
    sites: Counter[str] = Counter()
    for thread, stack, n in body["stacks"]:
        ours = [f for f in stack if "/detinfer/" in f.rsplit(":", 2)[0]]
        # The workers (controller/workqueue.py: detinfer-0, -1, ...) or, before the work
        # queue, kopf's thread pool.
        worker = group(thread) in ("detinfer-N", "ThreadPoolExecutor-N_N")
        if not worker or not any(":sync:" in f for f in ours):
            continue
        line = ours[-1].rsplit(":", 2)[2]
        where = "network" if kind(stack[-1]) == "network" else "running or blocked"
        sites[f"{short(ours[-1])}:{line} ({where})"] += n
    total = sum(sites.values()) or 1
    seconds = total * body["interval"]
    out = [f"workers inside sync: {seconds:.0f} thread-seconds, by innermost detinfer frame:"]
    for site, n in sites.most_common(top):
        out.append(f"  {n / total:6.1%} {n * body['interval']:7.1f} s  {site}")
    return "\n".join(out)


def main() -> int:
    print(summarize(json.loads(Path(sys.argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
