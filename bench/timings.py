"""What the operator's in-process probe (bench/sampler/probe.py) says about one size's run, next
to the audit log: how many watch events of each kind came in, how late kopf's event loop and the
GIL were, and where a new resource waited between its create and the operator's first request.

Pure functions over the probe's JSON and the audit figures, so that they can be tested on small
synthetic inputs. Times are wall-clock seconds (time.time()), as in the audit log.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detinfer.percentile import percentile

DIS = "deterministicinferenceservices"


def read(path: Path) -> dict[str, Any]:
    """The probe's lines merged: each holds what was new since the one before."""
    merged: dict[str, Any] = {
        "arrivals": {},
        "processed": {},
        "dis_first": {},
        "loop_lag": [],
        "gil_lag": [],
        "first_queued": {},
        "first_taken": {},
        "waits": [],
        "cpu": [],
    }
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        new = json.loads(line)
        for name, value in new.items():
            if name in ("arrivals", "processed"):
                for plural, items in value.items():
                    merged[name].setdefault(plural, []).extend(items)
            elif isinstance(value, list):
                merged[name].extend(value)
            else:
                merged[name].update(value)
    return merged


def spread(values: Iterable[float]) -> dict[str, float]:
    """p50, p99, max and count of `values` (NaN for no values)."""
    got = list(values)
    if not got:
        nan = float("nan")
        return {"p50": nan, "p99": nan, "max": nan, "n": 0}
    return {"p50": percentile(got, 50), "p99": percentile(got, 99), "max": max(got), "n": len(got)}


def events_per_kind(probe: Mapping[str, Any], since: float, until: float) -> dict[str, Any]:
    """Per resource kind: the watch events that arrived in [since, until], per second on average
    and in the busiest second."""
    seconds = max(until - since, 1e-9)
    out = {}
    for plural, arrivals in sorted(probe["arrivals"].items()):
        inside = [t for t in arrivals if since <= t <= until]
        per_second = Counter(int(t) for t in inside)
        out[plural] = {
            "events": len(inside),
            "per_second": len(inside) / seconds,
            "peak_per_second": max(per_second.values(), default=0),
        }
    return out


def lags(samples: Iterable[list[float]], since: float, until: float) -> dict[str, float]:
    """The spread of the lags sampled in [since, until] ([time, lag] pairs)."""
    return spread(lag for t, lag in samples if since <= t <= until)


def kopf_waits(probe: Mapping[str, Any], since: float, until: float) -> dict[str, Any]:
    """Per kind, for the events kopf processed in the window: arrival -> kopf's processing
    started (its per-object queue and the event loop), and the processing itself."""
    out = {}
    for plural, events in sorted(probe["processed"].items()):
        inside = [e for e in events if since <= e[0] <= until]
        out[plural] = {
            "wait": spread(started - arrived for arrived, started, _ in inside),
            "processing": spread(ended - started for _, started, ended in inside),
        }
    return out


def new_resource_path(
    probe: Mapping[str, Any],
    namespace: str,
    created: Mapping[str, float],
    first_request: Mapping[str, float],
) -> dict[str, dict[str, float]]:
    """Where each new resource's time went, from its create (audit log: the API server done) to
    the operator's first request about it (audit log: received), in steps:

    - watch: create -> its watch event arrived in the operator;
    - kopf: arrival -> kopf's processing of it began (the event loop's backlog);
    - trigger: processing began -> the key queued (index functions, the trigger);
    - queue: key queued -> a worker took it;
    - pass: taken -> the pass's first request received by the API server.

    Steps are measured only where both ends are known; a resource whose first event is kopf's
    listing (not a watch event) has no watch or kopf step."""
    steps: dict[str, list[float]] = {k: [] for k in ("watch", "kopf", "trigger", "queue", "pass")}
    dis_first = probe.get("dis_first", {})
    queued, taken = probe["first_queued"], probe["first_taken"]
    for name, made in created.items():
        key = f"{namespace}/{name}"
        event = dis_first.get(key)
        if event is not None:
            arrived, started, _ = event
            steps["watch"].append(arrived - made)
            steps["kopf"].append(started - arrived)
            if key in queued:
                steps["trigger"].append(queued[key] - started)
        if key in queued and key in taken:
            steps["queue"].append(taken[key] - queued[key])
        if key in taken and name in first_request:
            steps["pass"].append(first_request[name] - taken[key])
    return {step: spread(values) for step, values in steps.items()}


def queue_waits(probe: Mapping[str, Any], since: float, until: float) -> dict[str, Any]:
    """Every wait in the work queue that began in the window, by lane."""
    inside = [w for w in probe["waits"] if since <= w[0] <= until]
    return {
        "front": spread(w[1] - w[0] for w in inside if w[2]),
        "rest": spread(w[1] - w[0] for w in inside if not w[2]),
    }


VERDICT_STEPS = (
    "summary written -> queued in the front lane (the pod's watch event, the index)",
    "queued -> a worker took it",
    "taken -> the pass's first request received",
)


def verdict_path(
    probe: Mapping[str, Any],
    namespace: str,
    written: Mapping[str, float],
    first_request: Mapping[str, float],
) -> dict[str, Any]:
    """summary -> the operator's first request after it, split at the front-lane wait that the
    validator pod's ended state queued (the first front wait of the resource queued after its
    summary was written): per step its p50 and p99, and its mean over the slowest 1% of the
    whole (`written` and `first_request`: by resource name, on the probe's clock)."""
    fronts: dict[str, list[tuple[float, float]]] = {}
    for w in probe["waits"]:
        if len(w) > 3 and w[2]:
            fronts.setdefault(w[3], []).append((w[0], w[1]))
    rows = []
    for name, at in written.items():
        first = first_request.get(name)
        waits = sorted(q for q in fronts.get(f"{namespace}/{name}", []) if q[0] >= at)
        if first is None or not waits or waits[0][1] > first:
            continue
        queued, taken = waits[0]
        rows.append((first - at, queued - at, taken - queued, first - taken))
    return split_steps(rows, VERDICT_STEPS)


def split_steps(rows: list[tuple[float, ...]], labels: tuple[str, ...]) -> dict[str, Any]:
    """Rows of (total, step 1, step 2, ...): each step's p50 and p99 over the rows, and its mean
    over the slowest 1% by total (the rows that make the p99)."""
    if not rows:
        return {"n": 0}
    rows = sorted(rows)
    tail = rows[-max(1, len(rows) // 100) :]
    return {
        "n": len(rows),
        "tail_n": len(tail),
        "steps": {
            label: {
                "p50": percentile([r[i + 1] for r in rows], 50),
                "p99": percentile([r[i + 1] for r in rows], 99),
                "tail_mean": sum(r[i + 1] for r in tail) / len(tail),
            }
            for i, label in enumerate(labels)
        },
    }


def cpu_seconds(probe: Mapping[str, Any], since: float, until: float) -> dict[str, float]:
    """CPU seconds per group of threads between the last flushes before `since` and `until`:
    kopf's event loop (MainThread), the workers, the rest."""
    before = [c for t, c in probe["cpu"] if t <= since]
    after = [c for t, c in probe["cpu"] if t <= until]
    if not after:
        return {}
    start, end = (before[-1] if before else {}), after[-1]
    out: Counter[str] = Counter()
    for thread, seconds in end.items():
        out[thread_group(thread)] += seconds - start.get(thread, 0.0)
    return dict(out)


def thread_group(thread: str) -> str:
    if thread == "MainThread":
        return "event loop"
    if thread.startswith("detinfer-events"):
        return "Event posters"
    if thread.startswith("detinfer-watch"):
        return "child watches"
    if re.fullmatch(r"detinfer-\d+", thread):
        return "workers"
    if thread.startswith("bench-"):
        return "bench probe"
    return "other"
