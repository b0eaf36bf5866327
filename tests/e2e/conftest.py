"""Fixtures for the whole flow: a local cluster of its own, the operator, and the pod runner.

The pod runner (detinfer.local.pod_runner) runs the reference engine and the validator as local
processes on the pods' loopback IPs, so a DeterministicInferenceService goes from kubectl apply to
Ready through a real validation. The cluster is separate from the integration tests' (which play
the kubelet for validator pods themselves).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import (
    ROOT,
    Cluster,
    Operator,
    session_cluster,
    session_operator,
    wait_for,
)

CLUSTER_NAME = os.environ.get("DETINFER_E2E_CLUSTER", "detinfer-e2e")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    yield from session_cluster(CLUSTER_NAME)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    yield from session_operator(cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="session")
def pod_runner(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The pod runner as a real process; yields the folder of the pods' logs and summaries."""
    logs = tmp_path_factory.mktemp("pods")
    out = (logs / "pod-runner.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detinfer.local.pod_runner",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--log-dir",
            str(logs),
        ],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    yield logs
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    print(f"\npod logs: {logs}")


@pytest.fixture
def namespace(cluster: Cluster, operator: Operator, pod_runner: Path) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "dis", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
