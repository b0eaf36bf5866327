"""Events posted from threads of their own.

Events are auxiliary (the status is the record): a pass hands them over and goes on, so the
round trip of an Event post is never on the path of the next resource. Each Event is stamped
with the time it was handed over, so the order they were decided in survives the posting
threads. When the API server is slower than the Events come, at most `limit` wait; beyond that
they are dropped with a log line, as client-go's event recorder does.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

log = logging.getLogger(__name__)

Post = Callable[[Mapping[str, str], str, str, str, str, datetime], None]


class EventPoster:
    def __init__(self, post: Post, threads: int = 2, limit: int = 10_000):
        self._post = post
        self._queue: queue.Queue[tuple | None] = queue.Queue(limit)
        self._threads = [
            threading.Thread(target=self._run, name=f"detinfer-events-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def __call__(
        self, regarding: Mapping[str, str], type_: str, reason: str, note: str, action: str
    ) -> None:
        try:
            self._queue.put_nowait(
                (dict(regarding), type_, reason, note, action, datetime.now(UTC))
            )
        except queue.Full:
            log.warning(
                "%s/%s: %s Event dropped: %d Events wait to be posted",
                regarding.get("namespace"),
                regarding.get("name"),
                reason,
                self._queue.maxsize,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Post what waits, then stop the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    @property
    def pending(self) -> int:
        """Events handed over and not yet posted (waiting, or on their way to the API server).
        Not __len__: a poster with nothing pending must stay truthy where it is passed."""
        return self._queue.unfinished_tasks

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._post(*item)
            except Exception:  # the cluster's call logs API errors itself; this is a bug
                log.exception("posting an Event failed")
            finally:
                self._queue.task_done()
        self._queue.task_done()  # the stop's None
