"""The queue of resources to sync, and the threads that sync them.

kopf's handlers only add a key here and return: they never wait for an API call, so a burst of
events never holds kopf's event loop or its thread pool. The queue follows client-go's
workqueue: a key waits at most once however often it is added; a key that a worker holds is not
handed to a second worker, and if it is added meanwhile it is queued again when the first is
done (the new event is never lost, and no thread blocks on another's pass); `add_after` queues a
key once a delay has passed (a retry).

New resources (no Deployment yet, no pass run) go to the front lane: a user's `kubectl apply`
waits behind the first passes of other new resources only, not behind the follow-up passes of
everything created before it. So does a resource whose validator or benchmark has just ended
(controller/watches.py): a key added to the front while it waits in the rest lane moves to the
front. Each lane is first in, first out.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lanes: tuple[deque[K], deque[K]] = (deque(), deque())  # (front, rest)
        self._waiting: set[K] = set()
        self._held: set[K] = set()
        self._again: dict[K, bool] = {}  # held keys added meanwhile: front or not
        self._later: list[tuple[float, int, K]] = []  # (monotonic due time, tie breaker, key)
        self._count = itertools.count()
        self._closed = False

    def add(self, key: K, front: bool = False) -> None:
        with self._cond:
            self._add(key, front)

    def add_after(self, key: K, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._later, (time.monotonic() + delay, next(self._count), key))
            self._cond.notify()

    def get(self) -> K | None:
        """The next key, held by the caller until `done`; None once the queue is closed."""
        with self._cond:
            while True:
                self._release_due()
                for lane in self._lanes:
                    if lane:
                        key = lane.popleft()
                        self._waiting.discard(key)
                        self._held.add(key)
                        return key
                if self._closed:
                    return None
                timeout = self._later[0][0] - time.monotonic() if self._later else None
                self._cond.wait(timeout)

    def done(self, key: K) -> None:
        with self._cond:
            self._held.discard(key)
            if key in self._again:
                self._add(key, self._again.pop(key))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        """Keys waiting now (not those held or due later)."""
        with self._cond:
            return len(self._waiting)

    def _add(self, key: K, front: bool) -> None:
        if key in self._held:
            self._again[key] = self._again.get(key, False) or front
        elif key not in self._waiting:
            self._waiting.add(key)
            self._lanes[0 if front else 1].append(key)
            self._cond.notify()
        elif front and key in self._lanes[1]:
            self._lanes[1].remove(key)  # O(n), for a result only: rare beside the other adds
            self._lanes[0].append(key)

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, _, key = heapq.heappop(self._later)
            self._add(key, False)


class Workers:
    """`count` threads, each taking a key from `queue` and calling `work(key)` with it.

    `work` returns the delay after which the key must be synced again, or None."""

    def __init__(
        self, queue: WorkQueue[K], work: Callable[[K], float | None], count: int, name: str
    ) -> None:
        self.queue = queue
        self.work = work
        self.threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.close()
        for thread in self.threads:
            thread.join(timeout)

    def _run(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                delay = self.work(key)
            except Exception:  # a bug must not kill the thread: log it, try the key again later
                log.exception("%s: reconciliation failed", key)
                delay = RETRY_AFTER_ERROR_SECONDS
            finally:
                self.queue.done(key)
            if delay is not None:
                self.queue.add_after(key, delay)


RETRY_AFTER_ERROR_SECONDS = 10.0
