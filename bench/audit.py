"""What the API server's audit log says about a benchmark run: its own request latency, and each
resource's path through the operator (when the operator first touched it, in what order it wrote).

Pure functions over parsed audit entries (audit.k8s.io/v1 Event objects at Metadata level), so
that they can be tested on a small synthetic log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

OPERATOR_AGENTS = ("detinfer/", "kopf/")
# A watch's entry spans the whole watch, not one answer: it says nothing about latency.
LONG_RUNNING_VERBS = ("watch",)


def read(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as log:
        for line in log:
            if line.strip():
                yield json.loads(line)


def seconds(timestamp: str) -> float:
    """Seconds since the epoch of an audit timestamp (RFC 3339, microseconds, Z)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def latencies(entries: Iterable[dict[str, Any]], since: float, until: float) -> list[float]:
    """The API server's own time (stageTimestamp - requestReceivedTimestamp) for each completed,
    non-watch request received in [since, until] (epoch seconds), by anyone."""
    out = []
    for e in entries:
        if e.get("stage") != "ResponseComplete" or e.get("verb") in LONG_RUNNING_VERBS:
            continue
        received = seconds(e["requestReceivedTimestamp"])
        if since <= received <= until:
            out.append(seconds(e["stageTimestamp"]) - received)
    return out


def is_operator(entry: dict[str, Any]) -> bool:
    return entry.get("userAgent", "").startswith(OPERATOR_AGENTS)


def request_name(entry: dict[str, Any]) -> str:
    """`verb resource[/subresource]`, e.g. `patch deployments` or `patch .../status`."""
    ref = entry.get("objectRef") or {}
    sub = ref.get("subresource")
    return f"{entry['verb']} {ref.get('resource')}" + (f"/{sub}" if sub else "")


def owner_of(entry: dict[str, Any], names: set[str]) -> str | None:
    """The benchmark resource a request is about: the object's name is the resource's name, or
    starts with it and a separator (its Services, its Job, its Events `<name>.<suffix>`)."""
    name = (entry.get("objectRef") or {}).get("name") or ""
    if name in names:
        return name
    for sep in (".", "-"):
        head = name.split(sep, 1)[0]
        if head in names:
            return head
    return None


def operator_paths(
    entries: Iterable[dict[str, Any]], namespace: str, names: set[str]
) -> dict[str, list[tuple[float, float, str]]]:
    """Per resource, the operator's completed requests about it in `namespace`, in the order the
    API server received them: (received, completed, request_name)."""
    paths: dict[str, list[tuple[float, float, str]]] = {n: [] for n in names}
    for e in entries:
        if e.get("stage") != "ResponseComplete" or not is_operator(e):
            continue
        if (e.get("objectRef") or {}).get("namespace") != namespace:
            continue
        owner = owner_of(e, names)
        if owner is not None:
            paths[owner].append(
                (
                    seconds(e["requestReceivedTimestamp"]),
                    seconds(e["stageTimestamp"]),
                    request_name(e),
                )
            )
    for path in paths.values():
        path.sort()
    return paths


def creations(entries: Iterable[dict[str, Any]], namespace: str, resource: str) -> dict[str, float]:
    """When the API server finished each successful create of `resource` in `namespace`."""
    out = {}
    for e in entries:
        ref = e.get("objectRef") or {}
        if (
            e.get("stage") == "ResponseComplete"
            and e.get("verb") == "create"
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and (e.get("responseStatus") or {}).get("code", 0) < 300
        ):
            out[ref.get("name")] = seconds(e["stageTimestamp"])
    return out


def write_orders(paths: dict[str, list[tuple[float, float, str]]]) -> Counter[tuple[str, ...]]:
    """How often each sequence of the operator's requests about one resource occurred."""
    return Counter(tuple(step for _, _, step in path) for path in paths.values())
