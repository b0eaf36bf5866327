"""engine.attentionBackend Auto on the local cluster, with real reference engines.

The reference example with Auto and a prefill-heavy workload: the operator serves Tiled, Tree
and SplitKV in turn, each validated by a real validation Job and, when it passes, measured
against a real baseline by a real benchmark Job. SplitKV (the planted fault: fast, not
batch-invariant) must fail validation and never be chosen; the choice is the cheaper of the two
that passed, and the resource ends Ready on it.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.e2e.test_flow import EXAMPLE, NAME, _logs
from tests.support.chart import InstalledOperator as Operator
from tests.support.cluster import Cluster, wait_for

# Prefill-heavy (long prompts, few new tokens): where the two batch-invariant attentions differ.
WORKLOAD = {"concurrency": [2], "requests": 4, "inputTokens": 96, "outputTokens": 4, "rounds": 2}
SEARCH_TIMEOUT = 900


def test_auto_rejects_split_kv_and_serves_the_cheapest_that_passed(
    cluster: Cluster, operator: Operator, namespace: str, pod_runner
):
    spec: dict[str, Any] = copy.deepcopy(EXAMPLE)
    spec["spec"]["replicas"] = 1
    spec["spec"]["engine"]["attentionBackend"] = "Auto"
    spec["spec"]["overhead"] = {"enabled": True, "workload": WORKLOAD}
    cluster.apply(namespace, spec)
    started = time.monotonic()

    def chosen_and_ready() -> dict[str, Any] | None:
        dis = cluster.dis(namespace, NAME)
        search = (dis.get("status") or {}).get("attentionSearch") or {}
        if not search.get("message") or len(search.get("trials", [])) < 3:
            return None
        ready = cluster.condition(namespace, NAME, "Ready") or {}
        return dis if ready.get("status") == "True" else None

    try:
        dis = wait_for("the search's choice, Ready", chosen_and_ready, timeout=SEARCH_TIMEOUT)
    except AssertionError:
        status = cluster.dis(namespace, NAME).get("status")
        raise AssertionError(f"{status}\n{_logs(pod_runner)}") from None
    took = time.monotonic() - started
    search = dis["status"]["attentionSearch"]
    assert [t["backend"] for t in search["trials"]] == ["Tiled", "Tree", "SplitKV"], search
    assert "trying" not in search, search
    trials = {t["backend"]: t for t in search["trials"]}
    assert trials["SplitKV"]["verdict"] == "NotDeterministic", search
    assert "overheadPercent" not in trials["SplitKV"]
    for backend in ("Tiled", "Tree"):
        assert trials[backend]["verdict"] == "Deterministic", search
        assert isinstance(trials[backend]["overheadPercent"], float | int), search
    cheapest = min(("Tiled", "Tree"), key=lambda b: trials[b]["overheadPercent"])
    assert search["chosen"] == cheapest, search

    # The resource serves the choice: its revision is the chosen trial's, and the engine pod
    # runs that backend (the validator checked /server_info said so).
    assert dis["status"]["revision"] == trials[cheapest]["revision"]
    deployment = cluster.get("deployment", namespace, NAME)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    flag = args[args.index("--attention-backend") + 1] if "--attention-backend" in args else "tiled"
    assert flag == {"Tiled": "tiled", "Tree": "tree"}[cheapest], args
    reasons = [e["reason"] for e in cluster.get("events", namespace)["items"]]
    for reason in ("AttentionTrialStarted", "AttentionTrialFinished", "AttentionBackendChosen"):
        assert reason in reasons, reasons
    print(
        f"\nsearch done and Ready after {took:.0f} s: "
        + ", ".join(
            f"{b} {t['verdict']} {t.get('overheadPercent', '-')}" for b, t in trials.items()
        )
        + f"; chose {search['chosen']}"
    )
