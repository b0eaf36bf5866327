"""Issue #27 on the local cluster: a validated pod cannot be changed behind its verdict.

A DIS with a client key from a Secret goes Ready through a real validation (the engine, the
validator and the liveness probe all get the key from the Secret, as the kubelet gives it).
Then a hostile caller plays the attack on the validated pod:
- without the admin key, every admin endpoint that changes outputs refuses it (401), and the
  pod's outputs stay what they were;
- with the admin key, which the engine (like SGLang 0.5.23) answers on /server_info to any caller
  holding the client key, the weight swap goes through and the outputs change: the protection
  is the key, and here it leaked;
- the swap is caught: the liveness probe sees /model_info change, the engine restarts with its
  pinned weights, the operator validates the restarted pod against the recorded fingerprint, and
  the resource ends Ready with the same fingerprint and the old outputs.
No key's value appears in the resource, its children or its Events.
"""

from __future__ import annotations

import copy
import json
import secrets
from typing import Any

import httpx

from tests.e2e.test_flow import EXAMPLE, FLOW_TIMEOUT
from tests.support.chart import InstalledOperator as Operator
from tests.support.cluster import Cluster, wait_for

NAME = "sealed"
PROMPT = {
    "text": "The capital of France is",
    "sampling_params": {"temperature": 0, "max_new_tokens": 12},
}
# Each changes what a validated pod answers, or what it logs (SGLang 0.5.23's ADMIN_OPTIONAL).
ATTACKS = [
    ("/update_weights_from_disk", {"model_path": "tiny@seed=7"}),
    ("/update_weight_version", {"new_version": "rl-step-1"}),
    ("/load_lora_adapter", {"lora_name": "evil", "lora_path": "/tmp/evil"}),
    ("/flush_cache", {}),
]


def _spec(client_secret: str) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["metadata"]["name"] = NAME
    spec["spec"]["replicas"] = 1
    spec["spec"]["engine"]["apiKeySecret"] = {"name": client_secret, "key": "client"}
    spec["spec"]["validation"].update(trials=4, maxNewTokens=16)
    spec["spec"].pop("overhead")
    return spec


def _condition(cluster: Cluster, ns: str, type_: str) -> dict[str, Any]:
    return cluster.condition(ns, NAME, type_) or {}


def _ready(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    dis = cluster.dis(ns, NAME)
    conditions = (dis.get("status") or {}).get("conditions", [])
    ready = next((c for c in conditions if c["type"] == "Ready"), {})
    return dis if ready.get("status") == "True" else None


def _tokens(url: str, key: str) -> list[int]:
    r = httpx.post(f"{url}/generate", json=PROMPT, headers={"Authorization": f"Bearer {key}"})
    r.raise_for_status()
    return r.json()["output_ids"]


def _engine_pod(cluster: Cluster, ns: str) -> Any:
    (pod,) = [p for p in cluster.pods(ns, "engine", NAME) if not p.metadata.deletion_timestamp]
    return pod


def test_a_hostile_caller_cannot_change_a_validated_pod_without_the_admin_key(
    cluster: Cluster, operator: Operator, namespace: str, pod_runner
):
    client_key = "client-" + secrets.token_hex(16)
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "keys",
        "-n",
        namespace,
        f"--from-literal=client={client_key}",
    )
    cluster.apply(namespace, _spec("keys"))
    dis = wait_for("Ready", lambda: _ready(cluster, namespace), timeout=FLOW_TIMEOUT, interval=1)
    fingerprint = dis["status"]["fingerprint"]
    admin = _condition(cluster, namespace, "AdminEndpointsClosed")
    assert (admin["status"], admin["reason"]) == ("True", "AdminKey")
    pod = _engine_pod(cluster, namespace)
    url = f"http://{pod.status.pod_ip}:30000"
    before = _tokens(url, client_key)

    # The client key alone opens nothing but generation: not /generate without it...
    assert httpx.post(f"{url}/generate", json=PROMPT).status_code == 401
    # ...and no admin endpoint, with it or without any key.
    for path, body in ATTACKS:
        for headers in ({}, {"Authorization": f"Bearer {client_key}"}):
            answer = httpx.post(f"{url}{path}", json=body, headers=headers)
            assert answer.status_code == 401, (path, answer.status_code, answer.text)
    assert _tokens(url, client_key) == before
    info = httpx.get(f"{url}/model_info", headers={"Authorization": f"Bearer {client_key}"})
    assert (info.json()["model_path"], info.json()["weight_version"]) == ("tiny", "default")

    # The protection is the admin key: SGLang 0.5.23 (and so the reference engine) hands it to
    # any caller of /server_info, here to a holder of the client key. With it the swap works.
    server_info = httpx.get(f"{url}/server_info", headers={"Authorization": f"Bearer {client_key}"})
    admin_key = server_info.json()["admin_api_key"]
    assert admin_key and len(admin_key) == 64  # the one the pod made at start
    swap = httpx.post(
        f"{url}/update_weights_from_disk",
        json={"model_path": "tiny@seed=7"},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert swap.status_code == 200 and swap.json()["success"], swap.text
    assert _tokens(url, client_key) != before, "the swap changed nothing: the test shows nothing"
    restarts_before = pod.status.container_statuses[0].restart_count

    # Caught: the liveness probe reads /model_info, the engine restarts with its own weights,
    # and the restarted pod is validated again against the recorded fingerprint.
    def restarted_and_validated():
        current = _engine_pod(cluster, namespace)
        status = (current.status.container_statuses or [None])[0]
        if status is None or status.restart_count <= restarts_before:
            return None
        started = status.state.running.started_at if status.state.running else None
        jobs = [
            j
            for j in cluster.jobs(namespace, NAME)
            if started is not None
            and j.metadata.creation_timestamp >= started
            and current.metadata.name in (j.metadata.annotations or {}).get("detinfer.io/pods", "")
            and j.status.succeeded
        ]
        return jobs[0] if jobs and _ready(cluster, namespace) else None

    job = wait_for(
        "the swapped pod restarted and validated again",
        restarted_and_validated,
        timeout=FLOW_TIMEOUT,
        interval=1,
    )
    args = job.spec.template.spec.containers[0].args
    assert args[args.index("--expected-fingerprint") + 1] == fingerprint
    assert cluster.dis(namespace, NAME)["status"]["fingerprint"] == fingerprint
    assert _tokens(url, client_key) == before
    assert _engine_pod(cluster, namespace).metadata.name == pod.metadata.name  # the same pod

    # No key's value in what the API serves about the resource.
    texts = [
        json.dumps(cluster.dis(namespace, NAME)),
        json.dumps(cluster.get("deployment", namespace, NAME)),
        json.dumps(cluster.get("jobs", namespace)),
        json.dumps(cluster.get("pods", namespace)),
        json.dumps(cluster.get("events", namespace)),
    ]
    for text in texts:
        assert client_key not in text and admin_key not in text
