"""The work queue's promises (client-go's workqueue semantics) and the Event poster's."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from detinfer.controller.events import EventPoster
from detinfer.controller.observed import ChildView, Controller
from detinfer.controller.workqueue import Workers, WorkQueue


def test_a_key_waits_once_however_often_it_is_added():
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [q.get(), q.get(), q.get()] == ["a", "b", "c"]
    assert len(q) == 0


def test_new_resources_go_first_each_lane_in_order():
    q: WorkQueue[str] = WorkQueue()
    q.add("old-1")
    q.add("new-1", front=True)
    q.add("old-2")
    q.add("new-2", front=True)
    q.add("new-1", front=True)  # already waiting in the front lane: it keeps its place
    assert [q.get() for _ in range(4)] == ["new-1", "new-2", "old-1", "old-2"]


def test_a_result_moves_a_waiting_key_to_the_front_and_a_held_one_comes_back_there():
    q: WorkQueue[str] = WorkQueue()
    for key in ("old-1", "old-2", "old-3"):
        q.add(key)
    q.add("old-3", front=True)  # waiting in the rest lane: moves to the front, once
    assert len(q) == 3
    assert q.get() == "old-3"
    q.add("old-3")
    q.add("old-3", front=True)  # held: comes back in the front lane when done
    q.add("old-3")
    q.add("new-1", front=True)
    q.done("old-3")
    assert [q.get() for _ in range(4)] == ["new-1", "old-3", "old-1", "old-2"]


def test_a_key_added_while_held_comes_back_once_after_done():
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get() == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0  # not handed to a second worker while the first holds it
    q.done("a")
    assert len(q) == 1 and q.get() == "a"
    q.done("a")
    assert len(q) == 0


def test_add_after_waits_for_its_delay():
    q: WorkQueue[str] = WorkQueue()
    q.add_after("late", 0.2)
    q.add("now")
    started = time.monotonic()
    assert q.get() == "now"
    assert q.get() == "late"
    assert time.monotonic() - started >= 0.19


def test_close_wakes_the_waiting_workers():
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(q.get()))
    thread.start()
    q.close()
    thread.join(2)
    assert got == [None]


def test_workers_retry_after_the_delay_work_returns_and_after_errors():
    q: WorkQueue[str] = WorkQueue()
    calls: list[str] = []
    done = threading.Event()

    def work(key: str) -> float | None:
        calls.append(key)
        if key == "boom" and calls.count("boom") == 1:
            raise RuntimeError("a bug")
        if key == "retry" and calls.count("retry") == 1:
            return 0.05
        if calls.count("retry") == 2:
            done.set()
        return None

    workers = Workers(q, work, 2, "test")
    import detinfer.controller.workqueue as wq

    saved, wq.RETRY_AFTER_ERROR_SECONDS = wq.RETRY_AFTER_ERROR_SECONDS, 0.05
    try:
        workers.start()
        q.add("retry")
        q.add("boom")
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while calls.count("boom") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        workers.stop()
        wq.RETRY_AFTER_ERROR_SECONDS = saved
    assert calls.count("retry") == 2 and calls.count("boom") == 2


def test_no_two_workers_hold_one_key():
    q: WorkQueue[int] = WorkQueue()
    running: set[int] = set()
    overlaps: list[int] = []
    lock = threading.Lock()
    passes: list[int] = []

    def work(key: int) -> None:
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
        time.sleep(0.001)
        with lock:
            running.discard(key)
            passes.append(key)

    workers = Workers(q, work, 8, "test")
    workers.start()
    for i in range(2000):
        q.add(i % 5)
    deadline = time.monotonic() + 5
    while (len(q) or len(passes) < 5) and time.monotonic() < deadline:
        time.sleep(0.01)
    workers.stop()
    assert overlaps == []
    assert set(passes) == {0, 1, 2, 3, 4}
    assert len(passes) < 2000  # adds of a waiting key were merged


def test_events_are_posted_off_the_caller_in_the_order_they_were_decided():
    posted: list[tuple] = []
    release = threading.Event()

    def post(regarding, type_, reason, note, action, at):
        release.wait(5)
        posted.append((reason, at))

    poster = EventPoster(post, threads=1)
    started = time.monotonic()
    poster({"name": "qwen", "namespace": "ml"}, "Normal", "First", "one", "UpdateStatus")
    poster({"name": "qwen", "namespace": "ml"}, "Normal", "Second", "two", "UpdateStatus")
    assert time.monotonic() - started < 1  # the caller did not wait for the API server
    assert posted == [] and poster.pending == 2  # one waits, one is being posted
    release.set()
    poster.stop()
    assert [r for r, _ in posted] == ["First", "Second"] and poster.pending == 0
    assert all(isinstance(at, datetime) for _, at in posted) and posted[0][1] <= posted[1][1]


def test_events_beyond_the_limit_are_dropped_not_queued_without_end():
    release = threading.Event()
    posted: list[str] = []

    def post(regarding, type_, reason, note, action, at):
        release.wait(5)
        posted.append(reason)

    poster = EventPoster(post, threads=1, limit=2)
    for i in range(6):
        poster({"name": "qwen", "namespace": "ml"}, "Normal", f"E{i}", "", "UpdateStatus")
    release.set()
    poster.stop()
    # One was taken by the thread at once, two waited; the rest were dropped.
    assert 2 <= len(posted) <= 3 and posted[0] == "E0"


def test_a_child_still_recorded_as_created_is_seen_so():
    body = {
        "kind": "Deployment",
        "metadata": {
            "name": "qwen",
            "uid": "u",
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update"},
                {"manager": "detinfer", "operation": "Update"},
            ],
        },
    }
    assert ChildView.from_body(body).created
    body["metadata"]["managedFields"][1]["operation"] = "Apply"
    assert not ChildView.from_body(body).created
    body["metadata"]["managedFields"] = [
        {"manager": "detinfer", "operation": "Update", "subresource": "status"}
    ]
    assert not ChildView.from_body(body).created
    assert ChildView("Service", "qwen", "h", Controller("X", "", "u")).created is False


def test_the_state_posts_through_the_poster_even_when_nothing_is_pending():
    from detinfer.config import OperatorConfig
    from detinfer.controller.state import State

    posted: list[str] = []
    poster = EventPoster(lambda regarding, type_, reason, *rest: posted.append(reason), threads=1)
    assert poster.pending == 0
    state = State(object(), OperatorConfig(), poster)  # type: ignore[arg-type]
    assert state.post_event is poster  # not the cluster's own, synchronous call
    poster.stop()
