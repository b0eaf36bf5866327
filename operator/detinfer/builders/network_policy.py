"""The NetworkPolicies of a resource: who may reach its engine pods, and its baseline pods.

Engine pods serve generation, the admin endpoints and /metrics on one port (SGLang's
http_server.py), so the policy admits the port as a whole: to the clients the spec names (by
default the pods of the resource's namespace), the resource's own validation and benchmark Jobs,
and the monitoring namespace the operator is told of. Baseline pods, which only the benchmark
calls, admit the benchmark Job alone (a policy made only where spec.overhead runs a baseline). Only ingress is restricted. A NetworkPolicy selects pods
by labels, which anyone who may create pods in the namespace can wear: it keeps other namespaces
out, while the admin key keeps out callers inside (docs/architecture.md#threat-model).
"""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.spec import ClientPeer, LabelSelector
from detinfer.builders import common
from detinfer.config import OperatorConfig

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def engine_policy_name(dis: DeterministicInferenceService) -> str:
    return f"{dis.name}-engine"


def baseline_policy_name(dis: DeterministicInferenceService) -> str:
    return f"{dis.name}-baseline"


def _selector(selector: LabelSelector) -> dict[str, Any]:
    return {"matchLabels": dict(selector.match_labels)} if selector.match_labels else {}


def _peer(client: ClientPeer) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    if client.namespace_selector is not None:
        peer["namespaceSelector"] = _selector(client.namespace_selector)
    if client.pod_selector is not None:
        peer["podSelector"] = _selector(client.pod_selector)
    return peer


def _own_pods(dis: DeterministicInferenceService, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": common.selector_labels(dis, component)}}


def _policy(
    context: common.RevisionContext, name: str, component: str, peers: list[dict[str, Any]]
) -> dict[str, Any]:
    dis = context.dis
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(
            dis, name, context.labels(component, common.engine_app_name(dis))
        ),
        "spec": {
            "podSelector": {"matchLabels": common.selector_labels(dis, component)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": peers,
                    "ports": [{"protocol": "TCP", "port": c.ENGINE_PORT}],
                }
            ],
        },
    }
    return common.with_applied_hash(policy)


def build_network_policies(
    target: DeterministicInferenceService | common.RevisionContext, config: OperatorConfig
) -> list[dict[str, Any]]:
    """The engine pods' policy, and the baseline pods' where spec.overhead runs a baseline (none
    when spec.networkPolicy is off). Only what exists needs one: every policy is a create and a
    watch event per resource (docs/benchmarks.md, runs of 2026-12-07)."""
    context = common.context_of(target)
    dis = context.dis
    if not dis.spec.network_policy.enabled:
        return []
    clients = [_peer(p) for p in dis.spec.network_policy.clients] or [{"podSelector": {}}]
    engine_peers = [
        *clients,
        _own_pods(dis, c.COMPONENT_VALIDATOR),
        _own_pods(dis, c.COMPONENT_BENCH),
    ]
    if config.monitoring_namespace:
        engine_peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {NAMESPACE_NAME_LABEL: config.monitoring_namespace}
                }
            }
        )
    policies = [_policy(context, engine_policy_name(dis), c.COMPONENT_ENGINE, engine_peers)]
    if dis.spec.overhead.enabled:
        bench = [_own_pods(dis, c.COMPONENT_BENCH)]
        policies.append(_policy(context, baseline_policy_name(dis), c.COMPONENT_BASELINE, bench))
    return policies
