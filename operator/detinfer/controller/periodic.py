"""The periodic pass: every 30 s, every known resource is queued for a pass (revalidation, and
the catch-up after a missed event). A no-op (no API call) for a resource with nothing due.

Not a kopf timer: kopf puts a finalizer on every object that has a timer, so a resource could not
be deleted while the operator is not running.
"""

from __future__ import annotations

import threading

from detinfer.controller.state import State

TIMER_INTERVAL_SECONDS = 30


class Periodic(threading.Thread):
    def __init__(self, state: State):
        super().__init__(daemon=True, name="detinfer-periodic")
        self.state = state
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(TIMER_INTERVAL_SECONDS):
            self.tick()

    def tick(self) -> None:
        indexes = self.state.indexes
        if indexes is None:
            return  # not started yet: nothing is known
        for key in list(indexes.resources.keys()):
            self.state.queue.add(key)
