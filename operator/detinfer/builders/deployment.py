"""The engine Deployment: SGLang (or the reference engine) in deterministic mode, gated on validation."""

from __future__ import annotations

from typing import Any

from detinfer.api import constants as c
from detinfer.api import numerics
from detinfer.api.attention import effective_backend
from detinfer.api.base import Toggle
from detinfer.api.keys import has_admin_key
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.spec import AttentionBackend, EngineKind, SecretKeySelector
from detinfer.builders import common
from detinfer.builders.process_line import (
    ADMIN_KEY_FLAG,
    ADMIN_KEY_WRAPPER,
    ENGINE_COMMAND,
    HOST_FLAG,
    model_info_probe,
)
from detinfer.sglang_flags import features

MODEL_CACHE_PATH = "/var/cache/detinfer/models"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

# SGLang's /health_generate (and /health, which shares its handler) waits up to
# SGLANG_HEALTH_CHECK_TIMEOUT, 20 s by default, for the scheduler (srt/entrypoints/http_server.py);
# a probe must wait longer, or a busy but healthy server fails it.
SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS = 30
# Startup: the weights download (a 70B model in bf16 is about 140 GB: about 21 minutes at
# 1 Gbit/s from the hub; an 8B one, 16 GB, about 2.5), then loading, kernel JIT compilation and
# CUDA graph capture (minutes each on a first start): 60 minutes is twice the 70B case.
SGLANG_STARTUP_SECONDS = 3600


def sglang_version(dis: DeterministicInferenceService) -> str:
    version = dis.spec.engine.version
    if version is None:  # parse_dis refuses it (the CRD's rules)
        raise ValueError("spec.engine.version is required with kind: SGLang")
    return version


def engine_command(
    dis: DeterministicInferenceService, deterministic: bool = True
) -> tuple[list[str], list[str]]:
    """The container's command and args: every flag derives from the spec, extraArgs last.

    `deterministic` False is the overhead baseline's: no --enable-deterministic-inference and,
    for SGLang, no attention backend forced (the one it picks without determinism)."""
    spec = dis.spec
    engine = spec.engine
    args = ["--model-path", spec.model.path]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    args += [HOST_FLAG, "0.0.0.0", "--port", str(c.ENGINE_PORT)]
    if deterministic and engine.deterministic_inference == Toggle.ENABLED:
        args.append("--enable-deterministic-inference")
    backend = effective_backend(spec)
    if engine.kind == EngineKind.SGLANG:
        command = ["python3", "-m", "sglang.launch_server"]
        if deterministic:
            args += ["--attention-backend", backend.flag_value]
        args += ["--tp-size", str(engine.tensor_parallel_size)]
    else:
        command = list(ENGINE_COMMAND)
        args += ["--device", "cuda" if spec.resources.gpus_per_replica else "cpu"]
        if deterministic and backend != AttentionBackend.TILED:
            # Tiled is the engine's default: left out, so existing pods' templates stay as
            # they were (the default mode has one attention; the baseline passes none).
            args += ["--attention-backend", backend.flag_value]
    args += ["--random-seed", str(engine.sampling_seed), "--enable-metrics"]
    if engine.kind == EngineKind.SGLANG and engine.cuda_graph == Toggle.DISABLED:
        args += features.cuda_graph_off_flags(sglang_version(dis))
    if engine.radix_cache == Toggle.DISABLED:
        args.append("--disable-radix-cache")
    args += list(engine.extra_args)
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


WEIGHT_VERSION_FLAG = "--weight-version"
DEFAULT_WEIGHT_VERSION = "default"  # SGLang's ServerArgs.weight_version


def expected_weight_version(dis: DeterministicInferenceService) -> str:
    """The weight version /model_info must report: extraArgs' --weight-version, else SGLang's
    default (the last one given wins, as in argparse)."""
    version = DEFAULT_WEIGHT_VERSION
    args = list(dis.spec.engine.extra_args)
    for i, arg in enumerate(args):
        if arg == WEIGHT_VERSION_FLAG and i + 1 < len(args):
            version = args[i + 1]
        elif arg.startswith(WEIGHT_VERSION_FLAG + "="):
            version = arg.split("=", 1)[1]
    return version


def _model_info_liveness(
    dis: DeterministicInferenceService, path: str, period: int, threshold: int
) -> dict[str, Any]:
    """Liveness that also notices a weight swap (process_line.MODEL_INFO_PROBE)."""
    command = model_info_probe(
        path, dis.spec.model.path, expected_weight_version(dis), c.ENGINE_PORT
    )
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": threshold,
    }


def _probes(dis: DeterministicInferenceService) -> dict[str, Any]:
    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": c.ENGINE_PORT_NAME}}

    if dis.spec.engine.kind != EngineKind.SGLANG:
        # The reference engine loads in seconds, and its /health never generates.
        return {
            "startupProbe": {
                **http("/health_generate"),
                "periodSeconds": 2,
                "timeoutSeconds": 5,
                "failureThreshold": 60,
            },
            "readinessProbe": {
                **http("/health_generate"),
                "periodSeconds": 5,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            # The reference engine's /model_info answers from its event loop at once.
            "livenessProbe": _model_info_liveness(dis, "/model_info", period=5, threshold=3),
        }
    period = 10
    version = sglang_version(dis)
    return {
        # /health_generate runs one real generation, so a pod is "up" only when it can serve.
        "startupProbe": {
            **http("/health_generate"),
            "periodSeconds": period,
            "timeoutSeconds": SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS,
            "failureThreshold": SGLANG_STARTUP_SECONDS // period,
        },
        "readinessProbe": {
            **http("/health_generate"),
            "periodSeconds": 15,
            "timeoutSeconds": SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS,
            "failureThreshold": 3,
        },
        # Liveness must not generate (SGLang's /health does by default and can take 20 s on a
        # loaded server): model_info answers from the HTTP process without the scheduler, and
        # tells a weight swap. A pod is restarted only after two minutes of failures.
        "livenessProbe": _model_info_liveness(
            dis, features.model_info_path(version), period=20, threshold=6
        ),
    }


def _environment(
    dis: DeterministicInferenceService, deterministic: bool = True
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": MODEL_CACHE_PATH},
        {"name": "HOME", "value": "/tmp"},
    ]
    engine = dis.spec.engine
    if engine.kind == EngineKind.SGLANG:
        version = sglang_version(dis)
        env += features.liveness_environment(version)
        if deterministic:  # the batch-invariant numerics: what the baseline goes without
            env += numerics.environment(engine.numerics, version, engine.tensor_parallel_size)
    return env + key_environment(dis)


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
    app = common.engine_app_name(dis)
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
