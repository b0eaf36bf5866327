"""The periodic pass: every 30 s, one sync of every known resource (revalidation, retries, and
the catch-up after a pass that failed). A no-op (no API call) for a resource with nothing due.

Not a kopf timer: kopf puts a finalizer on every object that has a timer, so a resource could not
be deleted while the operator is not running.
"""

from __future__ import annotations

import logging
import threading

import kopf

from detinfer.controller.state import State
from detinfer.controller.sync import sync

log = logging.getLogger(__name__)

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
            return  # no handler has run yet: nothing is known
        for key, bodies in list(indexes["resources_by_key"].items()):
            for body in list(bodies):
                try:
                    sync(self.state, key, body, indexes)
                except kopf.TemporaryError as exc:
                    log.info("%s/%s: %s (next pass in %ss)", *key, exc, TIMER_INTERVAL_SECONDS)
                except Exception:
                    log.exception("%s/%s: reconciliation failed", *key)
