"""Start reference engines (`detinfer engine`) as real processes on loopback, for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]

QUICK = [
    "--trials",
    "4",
    "--max-new-tokens",
    "16",
    "--max-batch-size",
    "9",
    "--wait-seconds",
    "30",
    "--timeout-seconds",
    "240",
]
"""The engine tests' suites: small, as CI runs them (docs/engines.md measured the same)."""


def validate(
    tmp_path: Path,
    url: str | list[str],
    *args: str,
    quick: list[str] = QUICK,
    timeout: float = 300,
) -> tuple[int, dict, str]:
    """`detinfer validate` against `url` (or several endpoints, `NAME=URL` each) with `quick` and
    `args` (the protocol among them; sglang if not): exit code, report, output."""
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    endpoints = [a for u in ([url] if isinstance(url, str) else url) for a in ("--endpoint", u)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "detinfer.cli",
            "validate",
            *endpoints,
            "--report",
            str(report),
            *quick,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return done.returncode, json.loads(report.read_text()), output


def suites(report: dict) -> dict[str, dict]:
    """A report's suites by name."""
    return {s["name"]: s for s in report["suites"]}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server as a process of this machine: `args`, its output to `log`, up once GET
    `health_path` (/health unless a server has none) answers 200 at `url`; a context manager
    that stops it on the way out."""

    name = "server"
    health_path = "/health"
    url: str
    args: list[str]
    log: Path | None
    process: subprocess.Popen | None

    def launch(self, env: dict[str, str] | None, timeout: float) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.args}"
                )
            try:
                if httpx.get(f"{self.url}{self.health_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health_path} within {timeout} s")

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.launch(None, timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class EngineProcess(ServerProcess):
    """`detinfer engine --model-path tiny ...` on 127.0.0.1; a context manager."""

    name = "engine"

    def __init__(
        self,
        *args: str,
        deterministic: bool = False,
        seed: int = 0,
        host: str = "127.0.0.1",
        log: Path | None = None,
        threads: int | None = None,
    ):
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "detinfer.cli",
            "engine",
            "--model-path",
            "tiny",
            "--host",
            host,
            "--port",
            str(self.port),
            "--random-seed",
            str(seed),
            *(["--enable-deterministic-inference"] if deterministic else []),
            *args,
        ]
        self.log = log
        self.threads = threads
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> EngineProcess:
        threads = str(self.threads) if self.threads else os.environ.get("OMP_NUM_THREADS", "1")
        self.launch({**os.environ, "OMP_NUM_THREADS": threads}, timeout)
        return self
