"""A wall-clock stack sampler for the operator under `python -m bench.operator --profile`.

Python imports `sitecustomize` at start-up from its path; the bench puts this folder first on the
operator's PYTHONPATH only, and the sampler starts only when DETINFER_BENCH_SAMPLES names the
file to write. It needs nothing outside the standard library: every INTERVAL seconds it reads
every thread's current frame (sys._current_frames) and counts the stacks per thread; it also
records how late each of its own wake-ups came (the time it waited for the GIL) and, at the
end, each thread's CPU seconds from /proc. Everything is written as JSON every few seconds and
at exit, so a killed operator still leaves its samples.

With DETINFER_BENCH_PROBE set it also loads probe.py (timings of watch events, kopf's event loop,
the work queue), which the bench always does; DETINFER_BENCH_SWITCH_INTERVAL sets the process's
sys.setswitchinterval (bench.operator --switch-interval).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from probe import thread_cpu  # the probe's, one definition (this folder is on the path)

INTERVAL = 0.01
DEPTH = 40
FLUSH_EVERY = 5.0


def _frame_stack(frame) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    stack = []
    while frame is not None and len(stack) < DEPTH:
        code = frame.f_code
        stack.append(f"{code.co_filename}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return tuple(reversed(stack))


class Sampler(threading.Thread):
    def __init__(self, out: Path) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.out = out
        self.counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self.lateness: list[float] = []
        self.lock = threading.Lock()
        # Threads that ended are gone from /proc: keep the last figure seen of each.
        self.cpu: dict[str, float] = {}
        self.started = time.monotonic()

    def run(self) -> None:
        me = threading.get_ident()
        last_flush = time.monotonic()
        while True:
            planned = time.monotonic() + INTERVAL
            time.sleep(INTERVAL)
            self.lateness.append(time.monotonic() - planned)
            names = {t.ident: t.name for t in threading.enumerate()}
            with self.lock:
                for ident, frame in sys._current_frames().items():
                    if ident != me:
                        self.counts[(names.get(ident, str(ident)), _frame_stack(frame))] += 1
            if time.monotonic() - last_flush > FLUSH_EVERY:
                self.flush()
                last_flush = time.monotonic()

    def flush(self) -> None:
        with self.lock:
            self.cpu.update(thread_cpu())
            body = {
                "interval": INTERVAL,
                "seconds": time.monotonic() - self.started,
                "lateness": self.lateness[-200000:],
                "thread_cpu": self.cpu,
                "stacks": [[t, list(s), n] for (t, s), n in self.counts.items()],
            }
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.out)


if os.environ.get("DETINFER_BENCH_SWITCH_INTERVAL"):  # bench.operator --switch-interval
    sys.setswitchinterval(float(os.environ["DETINFER_BENCH_SWITCH_INTERVAL"]))

if os.environ.get("DETINFER_BENCH_PROBE"):
    import probe

    atexit.register(probe.install(Path(os.environ["DETINFER_BENCH_PROBE"])).flush)

if os.environ.get("DETINFER_BENCH_SAMPLES"):
    _sampler = Sampler(Path(os.environ["DETINFER_BENCH_SAMPLES"]))
    _sampler.start()
    atexit.register(_sampler.flush)
