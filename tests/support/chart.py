"""The operator as users install it, for the integration and e2e tests: `helm install` of
charts/detinfer, its pod run by the local pod runner under the chart's ServiceAccount.

The pod runner (detinfer.local.pod_runner) runs the chart's operator pod as a local process with
a TokenRequest token of the pod's ServiceAccount and no kubeconfig, so every request the operator
makes is checked against the chart's RBAC: a verb missing from the chart fails the tests (a
session's teardown also fails on any 403 the API server answered the operator).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.cluster import ROOT, Cluster, free_port, wait_established, wait_for

HELM = os.environ.get("HELM") or str(Path.home() / ".cache/detinfer/bin/current/helm")
CHART = ROOT / "charts" / "detinfer"
NAMESPACE = "detinfer-system"
RELEASE = "detinfer"
SERVICE_ACCOUNT = "detinfer"  # the chart's default: the release's full name
OPERATOR_SELECTOR = (
    f"app.kubernetes.io/name=detinfer,app.kubernetes.io/instance={RELEASE},"
    "app.kubernetes.io/component=operator"
)


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not Path(HELM).exists():
        subprocess.run([str(ROOT / "hack" / "build-binaries.sh"), "helm"], check=True)
    result = subprocess.run(
        [HELM, "--kubeconfig", str(cluster.kubeconfig), *args],
        text=True,
        capture_output=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def local_values(metrics_port: int, liveness_port: int) -> list[str]:
    """--set flags for the local cluster: ports free on this machine (the operator binds them on
    its pod's loopback IP), retries quick enough for tests."""
    return [
        "--set",
        f"metricsPort={metrics_port}",
        "--set",
        f"livenessPort={liveness_port}",
        "--set",
        "settings.retryAfterSeconds=5",
    ]


class PodRunner:
    """detinfer.local.pod_runner as a real process; `roles` limits which pods it runs."""

    def __init__(
        self, cluster: Cluster, log_dir: Path, roles: str, planted: dict[str, str] | None = None
    ):
        self.cluster, self.log_dir, self.roles = cluster, log_dir, roles
        self.planted = planted or {}
        """DIS name -> the fault its engine pods run with (the runner's --planted-fault)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.model_dir = log_dir / "models"
        """The model cache volume of LlamaCpp pods (the runner's --model-dir)."""

    def start(self) -> None:
        self.model_dir.mkdir(exist_ok=True)
        # LLAMA_SERVER (make e2e sets it): the cached llama-server that LlamaCpp pods run.
        llama = os.environ.get("LLAMA_SERVER")
        out = (self.log_dir / "pod-runner.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "detinfer.local.pod_runner",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--log-dir",
                str(self.log_dir),
                "--roles",
                self.roles,
                *(a for n, f in self.planted.items() for a in ("--planted-fault", f"{n}={f}")),
                "--model-dir",
                str(self.model_dir),
                *(["--llama-server", llama] if llama else []),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class InstalledOperator:
    """The chart's operator: its pod's local process, found through the pod runner's files."""

    def __init__(self, cluster: Cluster, runner: PodRunner):
        self.cluster, self.runner = cluster, runner
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self._restarts_at_stop: int | None = None

    def install(self, *extra: str, command: str = "install") -> None:
        """`helm install` (as `upgrade --install`: a kept cluster may have the release) or
        `helm upgrade`, with the local values; returns once the operator's pod serves."""
        helm(
            self.cluster,
            *(
                ["upgrade", "--install", "--create-namespace"]
                if command == "install"
                else [command]
            ),
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *local_values(self.metrics_port, self.liveness_port),
            *extra,
            "--wait",
            "--timeout",
            "120s",
        )
        self.wait_serving()

    def uninstall(self) -> None:
        helm(self.cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")

    def pod(self) -> Any | None:
        """The operator's pod that is not being deleted, if there is one."""
        pods = [
            p
            for p in self.cluster.core.list_namespaced_pod(
                NAMESPACE, label_selector=OPERATOR_SELECTOR
            ).items
            if p.metadata.deletion_timestamp is None
        ]
        return pods[0] if len(pods) == 1 else None

    def _files(self, suffix: str) -> Path:
        pod = self.pod()
        assert pod is not None, "no operator pod"
        return self.runner.log_dir / f"{NAMESPACE}_{pod.metadata.name}{suffix}"

    @property
    def log_path(self) -> Path:
        return self._files(".log")

    def pid(self) -> int:
        return int(self._files(".pid").read_text())

    def restarts(self) -> int:
        pod = self.pod()
        statuses = (pod.status.container_statuses if pod else None) or []
        return statuses[0].restart_count if statuses else 0

    def url(self, port: int, path: str) -> str:
        pod = self.pod()
        assert pod is not None and pod.status.pod_ip, "no operator pod with an IP"
        return f"http://{pod.status.pod_ip}:{port}{path}"

    def _alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.url(self.liveness_port, "/healthz"), timeout=1) as r:
                return r.status == 200
        except (OSError, AssertionError):
            return False

    def wait_serving(self) -> None:
        def ready() -> bool:
            pod = self.pod()
            statuses = (pod.status.container_statuses if pod else None) or []
            return bool(statuses and statuses[0].ready and self._alive())

        try:
            wait_for("the operator's pod ready and its /healthz", ready, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.runner_log_tail()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the operator's process as a crash (SIGKILL) or a stop would; the pod runner
        restarts it, as the kubelet restarts a container (restartPolicy Always)."""
        self._restarts_at_stop = self.restarts()
        pid = self.pid()
        os.kill(pid, sig)
        wait_for(f"the operator's process {pid} to end", lambda: not _running(pid), timeout=30)

    def start(self) -> None:
        """After stop(): the container restarted (restartCount + 1) and serving again."""
        if self._restarts_at_stop is not None:
            before = self._restarts_at_stop
            wait_for("the operator's container restarted", lambda: self.restarts() > before)
            self._restarts_at_stop = None
            # As the kubelet reports a restart: the run that ended, in lastState.
            pod = self.pod()
            statuses = (pod.status.container_statuses if pod else None) or []
            last = (
                statuses[0].last_state.terminated if statuses and statuses[0].last_state else None
            )
            assert last is not None and last.finished_at is not None, statuses
        self.wait_serving()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url(self.metrics_port, "/metrics"), timeout=5) as r:
            return r.read().decode()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def runner_log_tail(self, lines: int = 20) -> str:
        path = self.runner.log_dir / "pod-runner.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "pod runner log:\n" + "\n".join(text.splitlines()[-lines:])


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (the runner reaps it within a second)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def forbidden(cluster: Cluster, username: str) -> list[str]:
    """Requests of `username` that RBAC refused (the audit log's authorization decision; a 403
    for another reason, such as a create in a namespace being deleted, is not one)."""
    refused = []
    with cluster.audit_log.open() as log:
        for line in log:
            if username not in line or '"forbid"' not in line:
                continue
            entry = json.loads(line)
            decision = (entry.get("annotations") or {}).get("authorization.k8s.io/decision")
            if (entry.get("user") or {}).get("username") == username and decision == "forbid":
                ref = entry.get("objectRef") or {}
                refused.append(
                    f"{entry['verb']} {ref.get('resource')}"
                    f"{'/' + ref['subresource'] if ref.get('subresource') else ''}"
                    f" in {ref.get('namespace') or '(cluster)'}"
                )
    return refused


def session_operator(
    cluster: Cluster, log_dir: Path, roles: str, planted: dict[str, str] | None = None
) -> Iterator[InstalledOperator]:
    """A session's operator: the pod runner (running `roles`; `planted`: DIS name -> a fault
    its engine pods get from the runner), then `helm install`. At the end: the logs' paths, and
    a failure if the API server refused the operator anything."""
    runner = PodRunner(cluster, log_dir, roles, planted)
    runner.start()
    operator = InstalledOperator(cluster, runner)
    try:
        operator.install()
        wait_established(cluster)  # helm installs the chart's crds/ only where none is
        yield operator
    finally:
        runner.stop()
        print(f"\noperator and pod logs: {log_dir}")
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    refused = forbidden(cluster, user)
    assert not refused, f"the chart's RBAC refused the operator {len(refused)} requests: {refused}"
