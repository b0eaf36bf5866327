"""The operator bench's profile report (bench/profile_report.py) on synthetic stack samples."""

from __future__ import annotations

from bench.profile_report import call_sites, group, kind, summarize

OURS = "/w/operator/detinfer"
LIB = "/v/lib/python3.11"
WORKER = [f"{LIB}/threading.py:_bootstrap:1", f"{LIB}/concurrent/futures/thread.py:run:58"]
SYNC = f"{OURS}/controller/sync.py:sync:56"
APPLY = f"{OURS}/controller/cluster.py:apply:90"
READ = f"{LIB}/ssl.py:read:1134"


def body() -> dict:
    return {
        "interval": 0.01,
        "seconds": 3.0,
        "lateness": [0.0001, 0.0002, 0.03],
        "thread_cpu": {"ThreadPoolExecutor-0_0": 1.5, "ThreadPoolExecutor-0_1": 0.5},
        "stacks": [
            ["ThreadPoolExecutor-0_0", [*WORKER, SYNC, APPLY, READ], 60],
            ["ThreadPoolExecutor-0_1", [*WORKER, SYNC], 30],  # blocked on the lock
            ["ThreadPoolExecutor-0_1", [*WORKER, f"{LIB}/queue.py:get:171"], 10],  # idle
            ["MainThread", [f"{LIB}/selectors.py:select:468"], 100],
        ],
    }


def test_call_sites_split_the_pools_time_in_sync_by_innermost_frame_and_network_wait():
    report = call_sites(body())
    assert "workers inside sync: 1 thread-seconds" in report  # 90 samples of 10 ms
    lines = report.splitlines()[1:]
    assert "66.7%" in lines[0] and "controller/cluster.py:apply:90 (network)" in lines[0]
    assert "33.3%" in lines[1] and "controller/sync.py:sync:56 (running or blocked)" in lines[1]
    assert len(lines) == 2  # idle workers and other threads are not inside sync


def test_the_work_queues_workers_count_as_workers_too():
    stacks = [
        [name.replace("ThreadPoolExecutor-0_", "detinfer-"), *rest]
        for name, *rest in body()["stacks"]
    ]
    report = call_sites({**body(), "stacks": stacks})
    assert "workers inside sync: 1 thread-seconds" in report
    assert "controller/cluster.py:apply:90 (network)" in report


def test_threads_group_by_role_and_leaf_frames_say_what_a_thread_waits_for():
    assert group("ThreadPoolExecutor-0_13") == group("ThreadPoolExecutor-1_2")
    assert group("MainThread") == "MainThread"
    assert kind(READ) == "network"
    assert kind(f"{LIB}/selectors.py:select:468") == "idle"
    assert kind(APPLY) == "running"


def test_summary_reports_cpu_by_group_and_the_samplers_lateness():
    text = summarize(body())
    assert "ThreadPoolExecutor-N_N 2.0" in text
    assert "p99 30.0 ms" in text
    assert "ThreadPoolExecutor-N_N: 100 samples (network 60%, running 30%, idle 10%)" in text
