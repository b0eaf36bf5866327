"""The engine Deployment: the engine kind's container (detinfer.engines.kinds) in deterministic
mode, gated on validation."""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api.keys import has_admin_key
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.spec import SecretKeySelector
from detinfer.builders import common
from detinfer.builders.process_line import ADMIN_KEY_FLAG, ADMIN_KEY_WRAPPER
from detinfer.engines import kinds

MODEL_CACHE_PATH = "/var/cache/detinfer/models"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def engine_command(
    dis: DeterministicInferenceService, deterministic: bool = True
) -> tuple[list[str], list[str]]:
    """The container's command and args: every flag derives from the spec (the engine kind's
    package writes them, detinfer.engines.kinds), extraArgs, then the keys.

    `deterministic` False is the overhead baseline's: no determinism flag, no attention
    backend forced."""
    engine = dis.spec.engine
    command, args = kinds.of(dis.spec).command(dis.spec, deterministic)
    # The keys last, as $(VAR) the kubelet expands from the environment (key_environment):
    # never a literal. Without a Secret for it, the admin key is made in the pod at start.
    if engine.api_key_secret:
        args += ["--api-key", f"$({c.API_KEY_ENV})"]
    if has_admin_key(engine):
        if engine.admin_api_key_secret:
            args += [ADMIN_KEY_FLAG, f"$({c.ADMIN_API_KEY_ENV})"]
        else:
            command = [*ADMIN_KEY_WRAPPER, *command]
    return command, args


def secret_env(name: str, secret: SecretKeySelector) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
    }


def client_key_environment(dis: DeterministicInferenceService) -> list[dict[str, Any]]:
    """The client key, for the engine and for the Jobs that call it."""
    secret = dis.spec.engine.api_key_secret
    return [secret_env(c.API_KEY_ENV, secret)] if secret else []


def key_environment(dis: DeterministicInferenceService) -> list[dict[str, Any]]:
    """The engine's keys, from the Secrets the spec names; the operator never reads them."""
    env = client_key_environment(dis)
    admin = dis.spec.engine.admin_api_key_secret
    if admin and has_admin_key(dis.spec.engine):
        env.append(secret_env(c.ADMIN_API_KEY_ENV, admin))
    return env


def _resources(dis: DeterministicInferenceService) -> dict[str, Any]:
    res = dis.spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.gpus_per_replica:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(res.gpus_per_replica)
    if res.cpu:
        requests["cpu"] = limits["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _environment(
    dis: DeterministicInferenceService, deterministic: bool = True
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": MODEL_CACHE_PATH},
        {"name": "HOME", "value": "/tmp"},
    ]
    env += kinds.of(dis.spec).environment(dis.spec, deterministic)
    return env + key_environment(dis)


def _volumes(dis: DeterministicInferenceService) -> tuple[list[dict], list[dict]]:
    claim = dis.spec.model.cache_volume_claim
    volumes: list[dict[str, Any]] = [
        {
            "name": "dshm",
            "emptyDir": {"medium": "Memory", "sizeLimit": dis.spec.resources.shared_memory_size},
        },
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}
        if claim
        else {"name": "model-cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def _scheduling(dis: DeterministicInferenceService) -> dict[str, Any]:
    out: dict[str, Any] = {}
    product = dis.spec.resources.gpu_product
    if product:
        out["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [product]}
                            ]
                        }
                    ]
                }
            }
        }
    if dis.spec.resources.gpus_per_replica:
        # GPU nodes are commonly tainted so that only pods asking for GPUs land there.
        out["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return out


def build_deployment(
    target: DeterministicInferenceService | common.RevisionContext,
) -> dict[str, Any]:
    return _engine_deployment(common.context_of(target), deterministic=True)


def baseline_deployment_name(dis: DeterministicInferenceService) -> str:
    return f"{dis.name}-baseline"


def build_baseline_deployment(
    target: DeterministicInferenceService | common.RevisionContext,
) -> dict[str, Any]:
    """The overhead baseline: the engine Deployment's pod (image, model, revision, GPUs, TP size,
    probes) without determinism, one replica, component `baseline`: no Service of the operator
    selects it (their selectors name component `engine`), it has no readiness gate and is never
    validated. It lives while one measurement runs (docs/overhead.md)."""
    return _engine_deployment(common.context_of(target), deterministic=False)


def _engine_deployment(context: common.RevisionContext, deterministic: bool) -> dict[str, Any]:
    dis = context.dis
    kind = kinds.of(dis.spec)
    app = kind.app_name
    component = c.COMPONENT_ENGINE if deterministic else c.COMPONENT_BASELINE
    pod_labels = context.labels(component, app)
    command, args = engine_command(dis, deterministic)
    volumes, mounts = _volumes(dis)
    container: dict[str, Any] = {
        "name": c.ENGINE_CONTAINER,
        "image": dis.spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": _environment(dis, deterministic),
        "ports": [{"name": c.ENGINE_PORT_NAME, "containerPort": c.ENGINE_PORT, "protocol": "TCP"}],
        **kind.probes(dis.spec),
        "volumeMounts": mounts,
        "securityContext": kind.security_context(),
    }
    if resources := _resources(dis):
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # The pod is Ready (and in the Service) only once the operator sets this condition.
        "readinessGates": [{"conditionType": c.READINESS_GATE}],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": volumes,
        **_scheduling(dis),
    }
    if not deterministic:
        del pod_spec["readinessGates"]  # never validated, never gated: in no Service
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(
            dis, dis.name if deterministic else baseline_deployment_name(dis), dict(pod_labels)
        ),
        "spec": {
            "replicas": dis.spec.replicas if deterministic else 1,
            "selector": {"matchLabels": common.selector_labels(dis, component)},
            # New-revision pods are all created beside the old ones and validated together;
            # old pods keep serving until the new ones pass (maxUnavailable 0). The baseline
            # has nothing to keep serving: its old pod goes first (its GPUs are the new one's).
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
            }
            if deterministic
            else {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec},
        },
    }
    return common.with_applied_hash(deployment)
