"""hack/supervise-cluster.sh, the local cluster's kubelet for its own components, against a
stand-in kwokctl (what it tests is the script: which processes count as exited, and that it asks
kwokctl to start them again). `make chaos` runs it under the real kwokctl, where a frozen API
server makes kube-controller-manager and kube-scheduler exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = ROOT / "hack" / "supervise-cluster.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-scheduler")

# kwokctl's binary runtime, as far as the supervisor sees it: `start cluster` starts each
# component whose pid file is missing or names no live process, and writes its pid file.
FAKE_KWOKCTL = """#!/usr/bin/env bash
set -eu
dir="${KWOK_WORKDIR}/clusters/$2"
echo "$*" >> "${dir}/calls"
for name in COMPONENTS; do
  pid="$(cat "${dir}/pids/${name}.pid" 2>/dev/null || true)"
  if [[ -z "${pid}" ]] || ! kill -0 "${pid}" 2>/dev/null; then
    setsid sleep 300 < /dev/null > /dev/null 2>&1 &
    echo $! > "${dir}/pids/${name}.pid"
  fi
done
""".replace("COMPONENTS", " ".join(COMPONENTS))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    workdir = tmp_path / "kwok"
    directory = workdir / "clusters" / "c1"
    (directory / "pids").mkdir(parents=True)
    (directory / "logs").mkdir()
    kwokctl = tmp_path / "kwokctl"
    kwokctl.write_text(FAKE_KWOKCTL)
    kwokctl.chmod(0o755)
    env = {**os.environ, "KWOK_WORKDIR": str(workdir), "SUPERVISE_INTERVAL": "0.2"}
    subprocess.run([str(kwokctl), "--name", "c1", "start", "cluster"], env=env, check=True)
    (directory / "calls").unlink()
    started = subprocess.run(
        [str(SUPERVISE), "start", str(kwokctl), "c1", "/bin/true"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert "components restarted when they exit" in started.stdout
    yield directory, env
    subprocess.run([str(SUPERVISE), "stop", "c1"], env=env, check=True)
    for name in COMPONENTS:
        _kill(directory, name, signal.SIGKILL)


def _pid(directory: Path, name: str) -> int:
    return int((directory / "pids" / f"{name}.pid").read_text())


def _kill(directory: Path, name: str, sig: int) -> None:
    with suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.kill(_pid(directory, name), sig)


def _wait(what: str, probe, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _log(directory: Path) -> str:
    path = directory / "logs" / "supervisor.log"
    return path.read_text() if path.exists() else ""


def test_a_component_that_exits_is_started_again(cluster):
    directory, _ = cluster
    old = _pid(directory, "kube-scheduler")
    apiserver = _pid(directory, "kube-apiserver")
    os.kill(old, signal.SIGKILL)
    _wait("the restart", lambda: f"restarted kube-scheduler (pid {old}, exited)" in _log(directory))
    new = _pid(directory, "kube-scheduler")
    assert new != old and Path(f"/proc/{new}").exists()
    # Only what exited: the others run on, with the pids they had.
    assert _pid(directory, "kube-apiserver") == apiserver
    assert (directory / "calls").read_text().splitlines() == [
        "--name c1 start cluster --timeout 120s"
    ]


def test_a_stopped_component_is_not_restarted(cluster):
    """SIGSTOP (make chaos's frozen API server) is a stall, not an exit."""
    directory, _ = cluster
    pid = _pid(directory, "kube-apiserver")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # five rounds of the supervisor
        assert _pid(directory, "kube-apiserver") == pid
        assert not (directory / "calls").exists()
        assert "restarted" not in _log(directory)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_zombie_that_nobody_reaped_counts_as_exited(cluster):
    """kill -0 succeeds on a zombie, so kwokctl alone would take it for running."""
    directory, _ = cluster
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, time\n"
         "p = subprocess.Popen(['sleep', '0.2'])\n"
         "print(p.pid, flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        time.sleep(0.5)
        assert Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        os.kill(zombie, 0)  # what kwokctl checks: it succeeds
        _kill(directory, "etcd", signal.SIGKILL)
        (directory / "pids" / "etcd.pid").write_text(str(zombie))
        _wait("the restart", lambda: f"restarted etcd (pid {zombie}, exited)" in _log(directory))
        assert _pid(directory, "etcd") != zombie
    finally:
        parent.kill()
        parent.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _supervisor(directory: Path) -> int:
    pid = int((directory / "supervisor.pid").read_text())
    assert b"supervise-cluster" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


def test_it_ends_when_its_cluster_is_deleted(cluster):
    directory, _ = cluster
    supervisor = _supervisor(directory)
    for name in COMPONENTS:
        _kill(directory, name, signal.SIGKILL)
    for pid_file in (directory / "pids").iterdir():
        pid_file.unlink()
    (directory / "pids").rmdir()
    _wait("the supervisor to end", lambda: _zombie(supervisor), timeout=5)
    assert "restarted" not in _log(directory)


def test_stop_ends_it(cluster, tmp_path: Path):
    directory, env = cluster
    supervisor = _supervisor(directory)
    # Started twice: one supervisor per cluster.
    subprocess.run(
        [str(SUPERVISE), "start", str(tmp_path / "kwokctl"), "c1", "/bin/true"], env=env, check=True
    )
    assert int((directory / "supervisor.pid").read_text()) == supervisor
    subprocess.run([str(SUPERVISE), "stop", "c1"], env=env, check=True)
    assert _zombie(supervisor)
    # Once stopped, an exit stays an exit (as after `kwokctl stop cluster`).
    old = _pid(directory, "kube-scheduler")
    os.kill(old, signal.SIGKILL)
    time.sleep(1.0)
    assert _pid(directory, "kube-scheduler") == old
