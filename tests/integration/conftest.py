"""Fixtures: one local cluster and one operator per session, one namespace per test.

Set DETINFER_KEEP_CLUSTER=1 to leave the cluster running after the session (faster reruns).
If the cluster cannot be built or started, every test here errors with the reason: nothing is
skipped silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, Cluster, Operator, wait_for

CLUSTER_NAME = os.environ.get("DETINFER_TEST_CLUSTER", "detinfer-test")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubeconfig = Path.home() / ".cache" / "detinfer" / f"{CLUSTER_NAME}.kubeconfig"
    try:
        the_cluster = Cluster.up(CLUSTER_NAME, kubeconfig)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    the_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    the_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/deterministicinferenceservices.detinfer.io",
    )
    yield the_cluster
    if not os.environ.get("DETINFER_KEEP_CLUSTER"):
        the_cluster.down()


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    the_operator = Operator(cluster.kubeconfig, log_path)
    the_operator.start()
    yield the_operator
    the_operator.stop()
    print(f"\noperator log: {log_path}")


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
