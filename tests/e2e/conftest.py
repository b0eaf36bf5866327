"""Fixtures for the whole flow: a local cluster of its own, the operator, and the pod runner.

The operator is installed with `helm install` of charts/detinfer (tests.support.chart). The pod
runner (detinfer.local.pod_runner) runs the operator's pod under the chart's ServiceAccount, and
the reference engine and the validator as local processes on the pods' loopback IPs, so a
DeterministicInferenceService goes from kubectl apply to Ready through a real validation. The cluster is separate from the integration tests' (which play
the kubelet for validator pods themselves).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chart import InstalledOperator, session_operator
from tests.support.cluster import Cluster, session_cluster, wait_for

CLUSTER_NAME = os.environ.get("DETINFER_E2E_CLUSTER", "detinfer-e2e")
DRIFTING = "drifting"
"""The resource whose engine pods the pod runner gives a planted drift (test_monitoring)."""
DRIFT_AFTER = 1000
"""Engine requests (each prompt of a batch counts) before the drift: more than the first
validation of `drifting` sends (about 310, and its readiness probes), fewer than that and the
test's own traffic."""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    # No CRD: the chart's `helm install` installs it, as it does for users (test_flow checks).
    yield from session_cluster(CLUSTER_NAME, install_crd=False)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InstalledOperator]:
    """The chart's operator; the pod runner runs every detinfer pod (operator, engines,
    validators)."""
    yield from session_operator(
        cluster,
        tmp_path_factory.mktemp("pods"),
        roles="operator,engine,validator,bench",
        planted={DRIFTING: f"drift={DRIFT_AFTER}"},
    )


@pytest.fixture(scope="session")
def pod_runner(operator: InstalledOperator) -> Path:
    """The folder of the pods' logs and summaries (the pod runner's)."""
    return operator.runner.log_dir


@pytest.fixture
def namespace(cluster: Cluster, operator: InstalledOperator, pod_runner: Path) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "dis", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
