"""The operator bench's in-process figures (bench/timings.py over bench/sampler/probe.py's
file), on a small synthetic probe file written as the probe writes it: one line per flush."""

from __future__ import annotations

import json
import math

import pytest

from bench import timings

NS = "bench-100"
T0 = 1_000_000.0


def probe_file(tmp_path):
    first = {
        "arrivals": {"pods": [T0 + 0.1, T0 + 0.2, T0 + 0.3], timings.DIS: [T0 + 1.0]},
        "processed": {timings.DIS: [[T0 + 1.0, T0 + 1.5, T0 + 1.6]]},
        "dis_first": {f"{NS}/s0000": [T0 + 1.0, T0 + 1.5, T0 + 1.6]},
        "loop_lag": [[T0 + 0.5, 0.002], [T0 + 1.5, 0.4]],
        "gil_lag": [[T0 + 0.5, 0.001]],
        "first_queued": {f"{NS}/s0000": T0 + 1.7},
        "first_taken": {f"{NS}/s0000": T0 + 2.7},
        "waits": [[T0 + 1.7, T0 + 2.7, True], [T0 + 3.0, T0 + 3.5, False]],
        "cpu": [[T0, {"MainThread": 1.0, "detinfer-0": 0.5, "detinfer-periodic": 0.0}]],
    }
    second = {  # only what is new: more pods, one more flush of CPU, a lag outside the window
        "arrivals": {"pods": [T0 + 1.1]},
        "processed": {},
        "dis_first": {},
        "loop_lag": [[T0 + 99.0, 9.0]],
        "gil_lag": [],
        "first_queued": {},
        "first_taken": {},
        "waits": [],
        "cpu": [[T0 + 5, {"MainThread": 3.5, "detinfer-0": 1.0, "detinfer-periodic": 0.25}]],
    }
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    return timings.read(path)


def test_read_merges_the_flushes(tmp_path):
    probe = probe_file(tmp_path)
    assert probe["arrivals"]["pods"] == [T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 1.1]
    assert len(probe["loop_lag"]) == 3 and len(probe["cpu"]) == 2


def test_events_per_kind_count_the_window_and_the_busiest_second(tmp_path):
    events = timings.events_per_kind(probe_file(tmp_path), T0, T0 + 2)
    assert events["pods"] == {"events": 4, "per_second": 2.0, "peak_per_second": 3}
    assert events[timings.DIS]["events"] == 1


def test_lags_take_only_the_window(tmp_path):
    lag = timings.lags(probe_file(tmp_path)["loop_lag"], T0, T0 + 10)
    assert lag["n"] == 2 and lag["max"] == pytest.approx(0.4)
    assert math.isnan(timings.lags([], T0, T0 + 1)["p99"])


def test_new_resource_path_splits_create_to_first_request(tmp_path):
    probe = probe_file(tmp_path)
    path = timings.new_resource_path(
        probe, NS, {"s0000": T0 + 0.9, "s0001": T0 + 0.95}, {"s0000": T0 + 2.75}
    )
    got = {step: s["p50"] for step, s in path.items()}
    assert got == pytest.approx(
        {"watch": 0.1, "kopf": 0.5, "trigger": 0.2, "queue": 1.0, "pass": 0.05}
    )
    assert path["queue"]["n"] == 1  # s0001 never arrived: no step of it is made up
    # The same name in another size's namespace is another resource: none of its steps.
    other = timings.new_resource_path(probe, "bench-1000", {"s0000": T0 + 0.9}, {})
    assert other["watch"]["n"] == 0 and other["kopf"]["n"] == 0


def test_queue_waits_by_lane_and_cpu_by_thread_group(tmp_path):
    probe = probe_file(tmp_path)
    waits = timings.queue_waits(probe, T0, T0 + 10)
    assert waits["front"]["p50"] == pytest.approx(1.0)
    assert waits["rest"]["p50"] == pytest.approx(0.5)
    cpu = timings.cpu_seconds(probe, T0, T0 + 6)
    assert cpu == pytest.approx({"event loop": 2.5, "workers": 0.5, "other": 0.25})


def test_verdict_path_splits_summary_to_first_request_at_the_front_lane_wait():
    """A resource's first front-lane wait queued after its summary: the watch until it was
    queued, the wait, then the pass until its first request; rest-lane waits and waits before
    the summary do not count, and a resource without such a wait is left out."""
    probe = {
        "waits": [
            [T0 + 0.5, T0 + 0.6, True, f"{NS}/a"],  # before a's summary
            [T0 + 1.3, T0 + 1.4, False, f"{NS}/a"],  # rest lane
            [T0 + 1.2, T0 + 1.5, True, f"{NS}/a"],
            [T0 + 2.1, T0 + 2.2, True, f"{NS}/b"],
            [T0 + 3.0, T0 + 3.1, True],  # an old probe's wait, without its key
        ],
    }
    written = {"a": T0 + 1.0, "b": T0 + 2.0, "c": T0 + 3.0}
    first = {"a": T0 + 1.9, "b": T0 + 2.3, "c": T0 + 3.5}
    v = timings.verdict_path(probe, NS, written, first)
    assert v["n"] == 2 and v["tail_n"] == 1
    watch, queue, work = (v["steps"][label] for label in timings.VERDICT_STEPS)
    assert watch["tail_mean"] == pytest.approx(0.2)  # a: the slower of the two (0.9 s in all)
    assert queue["tail_mean"] == pytest.approx(0.3)
    assert work["tail_mean"] == pytest.approx(0.4)
    assert watch["p50"] == pytest.approx(0.1)  # b
    assert timings.verdict_path(probe, NS, {"c": T0 + 3.0}, first) == {"n": 0}
