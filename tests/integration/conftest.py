"""Fixtures: one local cluster and one operator per session, one namespace per test.

The operator is installed as users install it (`helm install` of charts/detinfer); the local pod
runner runs only its pod (`--roles operator`), under the chart's ServiceAccount, and these tests
play the kubelet for engine and validator pods themselves (tests.support.chart).

Set DETINFER_KEEP_CLUSTER=1 to leave the cluster running after the session (faster reruns).
If the cluster cannot be built or started, every test here errors with the reason: nothing is
skipped silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.chart import InstalledOperator, session_operator
from tests.support.cluster import Cluster, session_cluster, wait_for

CLUSTER_NAME = os.environ.get("DETINFER_TEST_CLUSTER", "detinfer-test")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    yield from session_cluster(CLUSTER_NAME)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InstalledOperator]:
    yield from session_operator(cluster, tmp_path_factory.mktemp("operator"), roles="operator")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
