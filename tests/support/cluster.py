"""A local cluster for the integration and e2e tests and the operator bench: the control plane
(hack/cluster-up.sh), kubectl, the operator as a host process (the bench; the tests install it
with the chart: tests.support.chart).

Nothing here is faked: the cluster is etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok built from pinned versions; kubectl is the real binary; the operator runs
as `detinfer run` in its own process. Tests only play the kubelet where kwok deliberately does
not: the validator pod's termination (see hack/kwok-stages.yaml).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config

from detinfer.local.pod_runner import ended_status

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).parent / "kubectl")
WRITE_VERBS = ("create", "update", "patch", "delete")
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running local cluster and the clients to talk to it."""

    def __init__(self, name: str, kubeconfig: Path):
        self.name = name
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    @classmethod
    def up(cls, name: str, kubeconfig: Path) -> Cluster:
        env = {
            **os.environ,
            "DETINFER_CLUSTER_NAME": name,
            "KUBECONFIG_OUT": str(kubeconfig),
            "KUBECTL": KUBECTL,
        }
        # Builds the binaries first when they are missing (minutes, once); its progress goes
        # to the terminal so a long cold build is visible.
        result = subprocess.run(
            [str(ROOT / "hack" / "cluster-up.sh")],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"hack/cluster-up.sh failed (exit {result.returncode}); its output ends:\n"
                + "\n".join(result.stdout.splitlines()[-40:])
            )
        return cls(name, kubeconfig)

    def down(self) -> None:
        self.down_by_name(self.name, self.kubeconfig)

    @staticmethod
    def down_by_name(name: str, kubeconfig: Path) -> None:
        env = {
            **os.environ,
            "DETINFER_CLUSTER_NAME": name,
            "KUBECONFIG_OUT": str(kubeconfig),
            "KUBECTL": KUBECTL,
        }
        subprocess.run(
            [str(ROOT / "hack" / "cluster-down.sh")], env=env, check=False, capture_output=True
        )

    @property
    def audit_log(self) -> Path:
        return Path.home() / ".cache/detinfer/kwok/clusters" / self.name / "logs" / "audit.log"

    def operator_requests(
        self, namespace: str | None = None, since: str = "", until: str = "~"
    ) -> list[dict[str, Any]]:
        """Audit entries of the operator's requests (its client, or kopf), in `namespace` if
        given, with since < stageTimestamp <= until (RFC 3339 with microseconds)."""
        entries = []
        with self.audit_log.open() as log:
            for line in log:
                if '"detinfer/' not in line and '"kopf/' not in line:
                    continue
                entry = json.loads(line)
                ref = entry.get("objectRef") or {}
                if (
                    entry.get("userAgent", "").startswith(("detinfer/", "kopf/"))
                    and (namespace is None or ref.get("namespace") == namespace)
                    and since < entry["stageTimestamp"] <= until
                ):
                    entries.append(entry)
        return entries

    def operator_writes(self, namespace: str, since: str) -> list[str]:
        """The operator's writes in `namespace` after `since`, one line each."""
        return [
            f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource') or ''}"
            f" {e['objectRef'].get('name')} by {e['userAgent']}"
            for e in self.operator_requests(namespace, since)
            if e["verb"] in WRITE_VERBS
        ]

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            text=True,
            capture_output=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(
        self, namespace: str, obj: dict[str, Any], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj), check=check
        )

    def get(self, kind: str, namespace: str, name: str | None = None) -> dict[str, Any]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if name:
            args.insert(2, name)
        return json.loads(self.kubectl(*args).stdout)

    def dis(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            "detinfer.io", "v1alpha1", namespace, "deterministicinferenceservices", name
        )

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        status = self.dis(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == type_), None)

    def pods(self, namespace: str, component: str, instance: str) -> list[Any]:
        selector = f"app.kubernetes.io/component={component},app.kubernetes.io/instance={instance}"
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def jobs(self, namespace: str, instance: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={instance}"
        return self.batch.list_namespaced_job(namespace, label_selector=selector).items

    def terminate_validator(
        self, namespace: str, job: str, exit_code: int, message: str | None
    ) -> None:
        """Play the kubelet for a validation Job's pod: its container ended so.

        The pod is found by the Job's UID (the label the Job controller sets), not its name:
        anyone can label a pod with a Job's name.
        """
        uid = self.batch.read_namespaced_job(job, namespace).metadata.uid
        pod = wait_for(
            f"the pod of Job {job}",
            lambda: next(
                iter(
                    self.core.list_namespaced_pod(
                        namespace, label_selector=f"batch.kubernetes.io/controller-uid={uid}"
                    ).items
                ),
                None,
            ),
        )
        wait_for(
            f"{pod.metadata.name} running",
            lambda: (
                self.core.read_namespaced_pod(pod.metadata.name, namespace).status.phase
                == "Running"
            ),
        )
        self.end_container(namespace, pod, exit_code, message)

    def end_container(self, namespace: str, pod: Any, exit_code: int, message: str | None) -> None:
        """Write what the kubelet writes when the pod's only container has exited."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        container = pod.spec.containers[0]
        body = ended_status(container.name, container.image, exit_code, message, now, now)
        self.core.patch_namespaced_pod_status(pod.metadata.name, namespace, body)


CRD_NAME = "deterministicinferenceservices.detinfer.io"


def wait_established(cluster: Cluster) -> None:
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")


def session_cluster(name: str, install_crd: bool = True) -> Iterator[Cluster]:
    """A test session's cluster, with the CRD applied (`install_crd`; else the chart's
    `helm install` installs it, as it does for users); deleted at the end unless
    DETINFER_KEEP_CLUSTER is set. A cluster that cannot be built fails the tests, never skips."""
    kubeconfig = Path.home() / ".cache" / "detinfer" / f"{name}.kubeconfig"
    try:
        cluster = Cluster.up(name, kubeconfig)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if install_crd:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        wait_established(cluster)
    yield cluster
    if not os.environ.get("DETINFER_KEEP_CLUSTER"):
        cluster.down()


class Operator:
    """`detinfer run` as a real host process against the cluster, with the kubeconfig's
    (administrator's) credentials: the operator bench. The tests use the chart's operator."""

    def __init__(self, kubeconfig: Path, log_path: Path):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DETINFER_RETRY_AFTER_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "detinfer"),
                "run",
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                str(self.liveness_port),
                "--no-scanning",  # as the chart runs it (charts/detinfer/templates/deployment.yaml)
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for("the operator's /healthz", self._alive, timeout=60)

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
            ) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            return response.read().decode()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
