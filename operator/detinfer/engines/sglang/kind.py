"""What the operator renders for `engine.kind: SGLang` (detinfer.engines.kinds).

`python3 -m sglang.launch_server` with the pinned release's flags: the model and its revision,
--enable-deterministic-inference, the attention backend, the tensor-parallel size, the seed,
metrics; the release's numerics and liveness environment (numerics.py, features.py); probes
that generate (startup, readiness) and one that does not (liveness, on /model_info). The
reference engine speaks the same command line and HTTP API (engines/reference/kind.py builds
on the helpers here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from detinfer.api import constants as c
from detinfer.api import extra_args
from detinfer.api.base import Toggle
from detinfer.api.keys import AdminAccess, admin_access
from detinfer.api.spec import (
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineSpec,
)
from detinfer.builders.common import RESTRICTED_CONTAINER, http_probe
from detinfer.builders.process_line import HOST_FLAG, model_info_probe
from detinfer.engines.kinds import SGLANG_PROTOCOL, ValidatorProtocol
from detinfer.engines.sglang import features, numerics

# SGLang's /health_generate (and /health, which shares its handler) waits up to
# SGLANG_HEALTH_CHECK_TIMEOUT, 20 s by default, for the scheduler (srt/entrypoints/http_server.py);
# a probe must wait longer, or a busy but healthy server fails it.
SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS = 30
# Startup: the weights download (a 70B model in bf16 is about 140 GB: about 21 minutes at
# 1 Gbit/s from the hub; an 8B one, 16 GB, about 2.5), then loading, kernel JIT compilation and
# CUDA graph capture (minutes each on a first start): 60 minutes is twice the 70B case.
SGLANG_STARTUP_SECONDS = 3600

WEIGHT_VERSION_FLAG = "--weight-version"
DEFAULT_WEIGHT_VERSION = "default"  # SGLang's ServerArgs.weight_version

_HOPPER = re.compile(r"(^|[^A-Z0-9])(GH200|H100|H200|H800|H20)([^0-9]|$)", re.IGNORECASE)
_BLACKWELL = re.compile(r"(^|[^A-Z0-9])(GB200|GB300|B100|B200|B300)([^0-9]|$)", re.IGNORECASE)


def version_of(spec: DeterministicInferenceServiceSpec) -> str:
    version = spec.engine.version
    if version is None:  # parse_dis refuses it (the CRD's rules)
        raise ValueError("spec.engine.version is required with kind: SGLang")
    return version


# ---- what SGLang and the reference engine share: the command line, /model_info ----


def leading_args(spec: DeterministicInferenceServiceSpec, deterministic: bool) -> list[str]:
    """The model, where to listen and the determinism flag."""
    args = ["--model-path", spec.model.path]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    args += [HOST_FLAG, "0.0.0.0", "--port", str(c.ENGINE_PORT)]
    if deterministic and spec.engine.deterministic_inference == Toggle.ENABLED:
        args.append("--enable-deterministic-inference")
    return args


def seed_args(engine: EngineSpec) -> list[str]:
    return ["--random-seed", str(engine.sampling_seed), "--enable-metrics"]


def trailing_args(engine: EngineSpec) -> list[str]:
    """The radix cache as the spec says, then extraArgs."""
    args = ["--disable-radix-cache"] if engine.radix_cache == Toggle.DISABLED else []
    return args + list(engine.extra_args)


def weight_version(spec: DeterministicInferenceServiceSpec) -> str:
    """The weight version /model_info must report: extraArgs' --weight-version, else SGLang's
    default (the last one given wins, as in argparse)."""
    version = DEFAULT_WEIGHT_VERSION
    args = list(spec.engine.extra_args)
    for i, arg in enumerate(args):
        if arg == WEIGHT_VERSION_FLAG and i + 1 < len(args):
            version = args[i + 1]
        elif arg.startswith(WEIGHT_VERSION_FLAG + "="):
            version = arg.split("=", 1)[1]
    return version


def model_info_liveness(
    spec: DeterministicInferenceServiceSpec, path: str, period: int, threshold: int
) -> dict[str, Any]:
    """Liveness that also notices a weight swap (process_line.MODEL_INFO_PROBE)."""
    command = model_info_probe(path, spec.model.path, weight_version(spec), c.ENGINE_PORT)
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": threshold,
    }


def common_expectations(
    spec: DeterministicInferenceServiceSpec, backend: AttentionBackend, version: str | None
) -> list[tuple[str, str]]:
    """What /server_info and /model_info must say: the spec's settings, as the server resolved
    them, the release where the server names one."""
    engine = spec.engine
    on_off = {Toggle.ENABLED: "on", Toggle.DISABLED: "off"}
    out = [
        ("--expect-deterministic-inference", on_off[engine.deterministic_inference]),
        ("--expect-tensor-parallel-size", str(engine.tensor_parallel_size)),
        ("--expect-attention-backend", backend.flag_value),
    ]
    if version:
        # The image is pinned by digest, not by release: the server says which it is.
        out.append(("--expect-version", version))
    # What /model_info must say, before and after the suites: a weight update changes it.
    out.append(("--expect-model-path", spec.model.path))
    out.append(("--expect-weight-version", weight_version(spec)))
    if engine.radix_cache == Toggle.DISABLED:
        out.append(("--expect-radix-cache", "off"))
    return out


def admin_endpoints(engine: EngineSpec) -> tuple[bool, str, str]:
    """AdminEndpointsClosed of an engine with SGLang's admin endpoints (weight updates, LoRA
    adapters, internal state, logging, the cache): (closed, reason, message)."""
    access = admin_access(engine)
    release = f"SGLang {engine.version}"
    if access == AdminAccess.ADMIN_KEY:
        secret = engine.admin_api_key_secret
        source = (
            f"from Secret {secret.name} key {secret.key}"
            if secret
            else "made in each pod when it starts and written nowhere the API serves"
        )
        return (
            True,
            access.value,
            f"the admin endpoints (weight updates, LoRA adapters, internal state, logging, "
            f"cache) take only the admin key, {source}; but SGLang answers it on /server_info "
            "to every caller it serves, so who reaches the pods decides "
            "(docs/architecture.md#threat-model)",
        )
    if access == AdminAccess.CLIENT_KEY:
        secret = engine.api_key_secret
        assert secret is not None
        return (
            False,
            access.value,
            f"{release} has no --admin-api-key: every client holding the key in Secret "
            f"{secret.name} can change the pods' weights and adapters; SGLang "
            f"{features.ADMIN_API_KEY_FIRST} and later close them with an admin key",
        )
    return (
        False,
        access.value,
        f"{release} has no --admin-api-key and spec.engine.apiKeySecret is unset: anyone who "
        "reaches a pod can change its weights and adapters; set apiKeySecret (its key then "
        f"opens them) or run SGLang {features.ADMIN_API_KEY_FIRST} or later",
    )


class SGLang:
    app_name = "sglang"

    def extra_args_errors(
        self, spec: DeterministicInferenceServiceSpec
    ) -> Iterator[tuple[int, str]]:
        """extraArgs against the pinned release's flags, and --chunked-prefill-size against the
        prefill alignment (numerics.py) of the backend, or of every backend Auto may choose."""
        engine = spec.engine
        # version None: the CRD's rules refuse that already; the flags every release knows
        yield from extra_args.flag_errors(extra_args.sglang(engine.version), engine.extra_args)
        if engine.version is None:
            return
        backends = (
            self.auto_candidates(spec)
            if engine.attention_backend == AttentionBackend.AUTO
            else (engine.attention_backend,)
        )
        seen: set[tuple[int, str]] = set()
        for backend in backends:
            for found in numerics.chunked_prefill_errors(
                list(engine.extra_args),
                engine.numerics,
                engine.version,
                backend.flag_value,
                backend.value,
            ):
                if found not in seen:
                    seen.add(found)
                    yield found

    def auto_candidates(
        self, spec: DeterministicInferenceServiceSpec
    ) -> tuple[AttentionBackend, ...]:
        """SGLang 0.5.x (srt/arg_groups/attention_hook.py: deterministic mode allows fa3, fa4,
        flashinfer and triton on NVIDIA GPUs): FA3 on Hopper (H100, H200, H800, H20, GH200), FA4
        on Blackwell (B100, B200, B300, GB200, GB300) from SGLang 0.5.16, FlashInfer and Triton
        everywhere. Without resources.gpuProduct the architecture is unknown, so only FlashInfer
        and Triton are tried."""
        product = spec.resources.gpu_product or ""
        found: list[AttentionBackend] = []
        if _HOPPER.search(product):
            found.append(AttentionBackend.FA3)
        if _BLACKWELL.search(product) and spec.engine.version in features.fa4_versions():
            found.append(AttentionBackend.FA4)
        return (*found, AttentionBackend.FLASHINFER, AttentionBackend.TRITON)

    def effective_backend(self, spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
        return spec.engine.attention_backend

    def has_admin_key(self, engine: EngineSpec) -> bool:
        return engine.version is not None and features.has_admin_key(engine.version)

    def admin_endpoints(self, engine: EngineSpec) -> tuple[bool, str, str]:
        return admin_endpoints(engine)

    def outputs_fields(self, engine: dict[str, Any]) -> dict[str, Any]:
        # The release and its numerics change the outputs.
        return engine

    def command(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> tuple[list[str], list[str]]:
        """`deterministic` False is the overhead baseline's: no --enable-deterministic-inference
        and no attention backend forced (the one SGLang picks without determinism)."""
        engine = spec.engine
        args = leading_args(spec, deterministic)
        if deterministic:
            args += ["--attention-backend", self.effective_backend(spec).flag_value]
        args += ["--tp-size", str(engine.tensor_parallel_size), *seed_args(engine)]
        if engine.cuda_graph == Toggle.DISABLED:
            args += features.cuda_graph_off_flags(version_of(spec))
        return ["python3", "-m", "sglang.launch_server"], args + trailing_args(engine)

    def environment(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> list[dict[str, Any]]:
        engine = spec.engine
        version = version_of(spec)
        env = features.liveness_environment(version)
        if deterministic:  # the batch-invariant numerics: what the baseline goes without
            env += numerics.environment(engine.numerics, version, engine.tensor_parallel_size)
        return env

    def probes(self, spec: DeterministicInferenceServiceSpec) -> dict[str, Any]:
        period = 10
        return {
            # /health_generate runs one real generation, so a pod is "up" only when it can serve.
            "startupProbe": {
                **http_probe("/health_generate"),
                "periodSeconds": period,
                "timeoutSeconds": SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS,
                "failureThreshold": SGLANG_STARTUP_SECONDS // period,
            },
            "readinessProbe": {
                **http_probe("/health_generate"),
                "periodSeconds": 15,
                "timeoutSeconds": SGLANG_HEALTH_GENERATE_TIMEOUT_SECONDS,
                "failureThreshold": 3,
            },
            # Liveness must not generate (SGLang's /health does by default and can take 20 s on
            # a loaded server): model_info answers from the HTTP process without the scheduler,
            # and tells a weight swap. A pod is restarted only after two minutes of failures.
            "livenessProbe": model_info_liveness(
                spec, features.model_info_path(version_of(spec)), period=20, threshold=6
            ),
        }

    def security_context(self) -> dict[str, Any]:
        # SGLang's images run as root and compile kernels into $HOME caches, so runAsNonRoot
        # and a read-only root filesystem would break them; everything else is restricted.
        return dict(RESTRICTED_CONTAINER)

    def validator_protocol(self, spec: DeterministicInferenceServiceSpec) -> ValidatorProtocol:
        return SGLANG_PROTOCOL

    def expectations(self, spec: DeterministicInferenceServiceSpec) -> tuple[tuple[str, str], ...]:
        # radixCache Enabled: SGLang may turn it off itself (FlashInfer in deterministic mode,
        # some model architectures); the RadixCache suite then reports "prefix cache off".
        return tuple(common_expectations(spec, self.effective_backend(spec), spec.engine.version))


SUPPORT = SGLang()
