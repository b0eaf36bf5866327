"""`make chaos`'s fast subset on the e2e cluster: the operator killed during a validation, an
engine pod deleted, a spec the operator refuses and then the good one back. Each must converge to
Ready with every replica validated, the fingerprint unchanged, no false verdict and no duplicate
Job (detinfer.local.chaos checks each and prints the table; `make chaos` runs every fault,
control-plane stalls included)."""

from __future__ import annotations

import uuid
from pathlib import Path

from detinfer.local import chaos
from tests.e2e.conftest import CLUSTER_NAME
from tests.support.chart import InstalledOperator
from tests.support.cluster import Cluster

CLUSTER_DIR = Path.home() / ".cache/detinfer/kwok/clusters" / CLUSTER_NAME


def test_the_fast_faults_each_converge(
    cluster: Cluster, operator: InstalledOperator, pod_runner: Path
):
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    run = chaos.Chaos(cluster.kubeconfig, pod_runner, CLUSTER_DIR, namespace)
    try:
        rows = chaos.run(run, list(chaos.FAST), timeout=420)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    print("\n" + chaos.table(rows))
    assert [r.fault for r in rows] == list(chaos.FAST)
    for row in rows:
        assert row.ok, chaos.table([row])
        # Counted before a scale-up is undone: one replica more then.
        replicas = run.replicas + (1 if chaos.FAULTS[row.fault][1] else 0)
        assert row.validated == f"{replicas}/{replicas}", row
    killed = rows[0]
    # The operator really died and came back: its container restarted once.
    assert any(r.startswith("container of detinfer-") for r in killed.restarted), killed
    # A replaced pod and a scale-up are each validated by a Job of their own.
    assert rows[0].validation_jobs >= 1 and rows[1].validation_jobs >= 1, rows
    # The refused spec changed no pod, so nothing was validated again.
    assert rows[2].validation_jobs == 0, rows[2]
