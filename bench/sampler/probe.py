"""Timings from inside the operator under `python -m bench.operator`: where a watch event waits.

Loaded by sitecustomize.py (this folder is first on the operator's PYTHONPATH only) when
DETINFER_BENCH_PROBE names the file to write; standard library only, and it changes no behaviour:
it wraps a few functions and records wall-clock times (time.time(), comparable with the API
server's audit log):

- every watch event as it arrives from the API server, by resource (kopf's `watch_objs`, and
  the operator's own child watches where they exist: `detinfer.controller.watches`);
- for kopf's events: when kopf's processing of it started and ended (the time between arrival
  and start is the event's wait in kopf's per-object queue and for the event loop);
- the event loop's lag: a coroutine on kopf's loop sleeps LOOP_INTERVAL and records how late it
  woke up (every other coroutine and callback that ran meanwhile);
- the GIL's lag: a thread sleeps GIL_INTERVAL and records how late it woke up;
- the work queue: when a key was queued (and in which lane), when a worker took it;
- each thread's CPU seconds (/proc), at every flush.

What is new is appended to the file as one JSON line every few seconds and at exit (a small
write: a dump of everything each time would itself hold the GIL and show up as lag);
bench/timings.py `read` merges the lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

LOOP_INTERVAL = 0.05
GIL_INTERVAL = 0.01
FLUSH_EVERY = 5.0


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each group of threads of this process, by name."""
    tick = os.sysconf("SC_CLK_TCK")
    by_id = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        name = by_id.get(int(task.name), f"native-{task.name}")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()
        # resource plural -> arrival times
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        # resource plural -> [(arrived, started, ended)] for kopf's processing
        self.processed: defaultdict[str, list[tuple[float, float, float]]] = defaultdict(list)
        # the first event of each DIS by name: (arrived, kopf started, kopf ended)
        self.dis_first: dict[str, tuple[float, float, float]] = {}
        self.loop_lag: list[tuple[float, float]] = []
        self.gil_lag: list[tuple[float, float]] = []
        # work queue: key -> first time queued; [(queued, taken, front, key)] for every wait
        self.first_queued: dict[str, float] = {}
        self.first_taken: dict[str, float] = {}
        self.waits: list[tuple[float, float, bool]] = []
        self._enqueued: dict[Any, tuple[float, bool]] = {}
        self.cpu: list[tuple[float, dict[str, float]]] = []
        self._loop_task: asyncio.Task[None] | None = None
        # How much of each record was written already: (name[, plural]) -> length.
        self._flushed: dict[tuple[str, ...], int] = {}

    # ---- recording ----

    def arrived(self, plural: str) -> float:
        now = time.time()
        self.arrivals[plural].append(now)
        return now

    def kopf_processed(self, plural: str, raw_event: Any, started: float, ended: float) -> None:
        arrived = raw_event.get("_probe_arrived") if isinstance(raw_event, dict) else None
        if arrived is None:
            return  # from the initial listing, not the watch
        self.processed[plural].append((arrived, started, ended))
        if plural == "deterministicinferenceservices":
            meta = (raw_event.get("object") or {}).get("metadata") or {}
            # namespace/name: each size of the bench reuses the names in a namespace of its own.
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            if meta.get("name") and key not in self.dis_first:
                self.dis_first[key] = (arrived, started, ended)

    async def _loop_lag(self) -> None:
        while True:
            planned = time.monotonic() + LOOP_INTERVAL
            await asyncio.sleep(LOOP_INTERVAL)
            self.loop_lag.append((time.time(), time.monotonic() - planned))

    def _gil_lag(self) -> None:
        last_flush = time.monotonic()
        while True:
            planned = time.monotonic() + GIL_INTERVAL
            time.sleep(GIL_INTERVAL)
            self.gil_lag.append((time.time(), time.monotonic() - planned))
            if time.monotonic() - last_flush > FLUSH_EVERY:
                self.flush()
                last_flush = time.monotonic()

    def flush(self) -> None:
        with self.lock:
            self.cpu.append((time.time(), thread_cpu()))
            line = {
                name: _new(name, value, self._flushed)
                for name, value in (
                    ("arrivals", self.arrivals),
                    ("processed", self.processed),
                    ("dis_first", self.dis_first),
                    ("loop_lag", self.loop_lag),
                    ("gil_lag", self.gil_lag),
                    ("first_queued", self.first_queued),
                    ("first_taken", self.first_taken),
                    ("waits", self.waits),
                    ("cpu", self.cpu),
                )
            }
            with self.out.open("a") as out:
                out.write(json.dumps(line) + "\n")

    # ---- installing ----

    def start(self) -> None:
        threading.Thread(target=self._gil_lag, name="bench-probe", daemon=True).start()

    def install_kopf(self) -> None:
        from kopf._cogs.clients import watching
        from kopf._core.reactor import processing

        probe = self
        watch_objs = watching.watch_objs

        async def probed_watch_objs(*, resource: Any, **kwargs: Any) -> Any:
            async for raw in watch_objs(resource=resource, **kwargs):
                if isinstance(raw, dict) and raw.get("type") not in (None, "BOOKMARK", "ERROR"):
                    raw["_probe_arrived"] = probe.arrived(resource.plural)
                yield raw

        process = processing.process_resource_event

        async def probed_process(*, resource: Any, raw_event: Any, **kwargs: Any) -> Any:
            probe._once_on_loop()
            started = time.time()
            try:
                return await process(resource=resource, raw_event=raw_event, **kwargs)
            finally:
                probe.kopf_processed(resource.plural, raw_event, started, time.time())

        watching.watch_objs = probed_watch_objs  # type: ignore[assignment]
        processing.process_resource_event = probed_process  # type: ignore[assignment]

    def _once_on_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop_lag())

    def install_queue(self) -> None:
        """Wraps the work queue's internal add (called with its lock held) and get."""
        from detinfer.controller import workqueue

        probe = self
        queue_cls = workqueue.WorkQueue
        add, get = queue_cls._add, queue_cls.get

        def probed_add(self: Any, key: Any, front: bool, *args: Any, **kwargs: Any) -> Any:
            if key not in self._held and key not in self._waiting:
                now = time.time()
                probe._enqueued[key] = (now, front)
                probe.first_queued.setdefault("/".join(key), now)
            return add(self, key, front, *args, **kwargs)

        def probed_get(self: Any, *args: Any, **kwargs: Any) -> Any:
            key = get(self, *args, **kwargs)
            if key is not None:
                now = time.time()
                queued = probe._enqueued.pop(key, None)
                if queued is not None:
                    probe.waits.append((queued[0], now, queued[1], "/".join(key)))
                probe.first_taken.setdefault("/".join(key), now)
            return key

        queue_cls._add = probed_add  # type: ignore[method-assign]
        queue_cls.get = probed_get  # type: ignore[method-assign]
        self.install_watches()

    def install_watches(self) -> None:
        """Counts the events of the operator's own child watches, where it has them."""
        try:
            from detinfer.controller import watches
        except ImportError:
            return  # children watched by kopf: counted in probed_watch_objs
        probe = self
        handle = watches.ChildWatch.handle

        def probed_handle(self: Any, event: Any) -> Any:
            if event.get("type") != "BOOKMARK":
                probe.arrived(self.kind.index.split("_by_", 1)[0])
            return handle(self, event)

        watches.ChildWatch.handle = probed_handle  # type: ignore[method-assign]


def _new(name: str, value: Any, flushed: dict[tuple[str, ...], int]) -> Any:
    """What `value` (a list, a dict of lists, or a dict of records) got since the last flush.

    Lists and dicts only grow (a dict's new keys come last), so a length says what was written."""
    if isinstance(value, list):
        start = flushed.get((name,), 0)
        flushed[(name,)] = len(value)
        return value[start:]
    if name in ("arrivals", "processed"):
        out = {}
        for plural, items in list(value.items()):
            out[plural] = _new(f"{name}/{plural}", items, flushed)
        return out
    start = flushed.get((name,), 0)
    items = list(value.items())
    flushed[(name,)] = len(items)
    return dict(items[start:])


PROBE: Probe | None = None


def install(out: Path) -> Probe:
    global PROBE
    PROBE = Probe(out)
    PROBE.install_kopf()
    # Before the operator starts its workers: a worker already waiting inside the queue's get
    # would hand out its first key unrecorded.
    PROBE.install_queue()
    PROBE.start()
    return PROBE
