"""The engine Deployment: SGLang (or the reference engine) in deterministic mode, gated on validation."""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api.base import Toggle
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.spec import EngineKind
from detinfer.builders import common
from detinfer.builders.process_line import ENGINE_COMMAND, HOST_FLAG

MODEL_CACHE_PATH = "/var/cache/detinfer/models"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def engine_command(dis: DeterministicInferenceService) -> tuple[list[str], list[str]]:
    """The container's command and args: every flag derives from the spec, extraArgs last."""
    spec = dis.spec
    engine = spec.engine
    args = ["--model-path", spec.model.path]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    args += [HOST_FLAG, "0.0.0.0", "--port", str(c.ENGINE_PORT)]
    if engine.deterministic_inference == Toggle.ENABLED:
        args.append("--enable-deterministic-inference")
    if engine.kind == EngineKind.SGLANG:
        command = ["python3", "-m", "sglang.launch_server"]
        args += [
            "--attention-backend",
            engine.attention_backend.sglang_flag_value,
            "--tp-size",
            str(engine.tensor_parallel_size),
        ]
    else:
        command = list(ENGINE_COMMAND)
        args += ["--device", "cuda" if spec.resources.gpus_per_replica else "cpu"]
    args += ["--random-seed", str(engine.sampling_seed), "--enable-metrics"]
    if engine.kind == EngineKind.SGLANG and engine.cuda_graph == Toggle.DISABLED:
        args.append("--disable-cuda-graph")
    if engine.radix_cache == Toggle.DISABLED:
        args.append("--disable-radix-cache")
    return command, args + list(engine.extra_args)


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


def _probes(dis: DeterministicInferenceService) -> dict[str, Any]:
    sglang = dis.spec.engine.kind == EngineKind.SGLANG

    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": c.ENGINE_PORT_NAME}}

    return {
        # /health_generate runs one real generation, so a pod is "up" only when it can serve.
        # Big models take minutes to download and load: up to 30 min (SGLang) / 2 min (reference).
        "startupProbe": {
            **http("/health_generate"),
            "periodSeconds": 10 if sglang else 2,
            "timeoutSeconds": 30 if sglang else 5,
            "failureThreshold": 180 if sglang else 60,
        },
        "readinessProbe": {
            **http("/health_generate"),
            "periodSeconds": 15 if sglang else 5,
            "timeoutSeconds": 30 if sglang else 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            **http("/health"),
            "periodSeconds": 15,
            "timeoutSeconds": 10,
            "failureThreshold": 4,
        },
    }


def _security_context(dis: DeterministicInferenceService) -> dict[str, Any]:
    if dis.spec.engine.kind == EngineKind.SGLANG:
        # SGLang's images run as root and compile kernels into $HOME caches, so runAsNonRoot
        # and a read-only root filesystem would break them; everything else is restricted.
        return dict(common.RESTRICTED_CONTAINER)
    return {
        **common.RESTRICTED_CONTAINER,
        "runAsNonRoot": True,
        "runAsUser": common.NON_ROOT_UID,
        "runAsGroup": common.NON_ROOT_UID,
        "readOnlyRootFilesystem": True,
    }


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
    context = common.context_of(target)
    dis = context.dis
    app = common.engine_app_name(dis)
    pod_labels = context.labels(c.COMPONENT_ENGINE, app)
    command, args = engine_command(dis)
    volumes, mounts = _volumes(dis)
    container: dict[str, Any] = {
        "name": c.ENGINE_CONTAINER,
        "image": dis.spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": [
            {"name": "HF_HOME", "value": MODEL_CACHE_PATH},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": c.ENGINE_PORT_NAME, "containerPort": c.ENGINE_PORT, "protocol": "TCP"}],
        **_probes(dis),
        "volumeMounts": mounts,
        "securityContext": _security_context(dis),
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
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(dis, dis.name, dict(pod_labels)),
        "spec": {
            "replicas": dis.spec.replicas,
            "selector": {"matchLabels": common.selector_labels(dis, c.COMPONENT_ENGINE)},
            # New-revision pods are all created beside the old ones and validated together;
            # old pods keep serving until the new ones pass (maxUnavailable 0).
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec},
        },
    }
    return common.with_applied_hash(deployment)
