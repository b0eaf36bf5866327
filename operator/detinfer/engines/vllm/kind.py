"""What the operator renders for `engine.kind: VLLM` (detinfer.engines.kinds).

`vllm serve` (the vllm/vllm-openai images' entrypoint) with vLLM's batch invariance on:
VLLM_BATCH_INVARIANT=1 in the environment (vLLM 0.11.1 and later), which makes vLLM swap in its
batch-invariant kernels (matmul, log_softmax, mean, RMSNorm) and, at start-up, pin what it reads
from the environment: the custom all-reduce to its 1-stage kernel (the only one whose reduction
order is independent of size and rank), NCCL to tree all-reduce on one channel with the Simple
protocol, cuBLAS workspaces, and TF32 off (vllm/model_executor/determinism/batch_invariant.py,
`override_envs_for_invariance`, `init_batch_invariance`). Only attention backends whose
`supports_batch_invariance()` is True are allowed (FLASH_ATTN, TRITON_ATTN, and for MLA models
FLASH_ATTN_MLA, TRITON_MLA; the CRD refuses the rest), passed as --attention-backend (vLLM 0.13
and later; the VLLM_ATTENTION_BACKEND variable was removed in 0.15). The spec also sets --seed,
--revision, --tensor-parallel-size, prefix caching (--enable-prefix-caching or
--no-enable-prefix-caching from radixCache) and --enforce-eager when cudaGraph is Disabled.

The overhead baseline (deterministic False) drops the variable and the forced backend. The
validator speaks the OpenAI protocol with vLLM's return_tokens_as_token_ids (token ids compared,
not strings). /health answers once the engine runs (exempt from --api-key).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from detinfer.api import constants as c
from detinfer.api.base import Toggle
from detinfer.api.spec import (
    VLLM_ATTENTION_BACKENDS,
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineSpec,
)
from detinfer.builders.common import RESTRICTED_CONTAINER, http_probe
from detinfer.builders.process_line import HOST_FLAG
from detinfer.engines.kinds import NO_ADMIN_ENDPOINTS, ValidatorProtocol

BATCH_INVARIANT_VARIABLE = "VLLM_BATCH_INVARIANT"
# Startup: the weights download and load, torch.compile and CUDA graph capture, as for SGLang.
STARTUP_SECONDS = 3600


class VLLM:
    app_name = "vllm"

    def extra_args_errors(
        self, spec: DeterministicInferenceServiceSpec
    ) -> Iterator[tuple[int, str]]:
        # The CRD refuses every item until vLLM's flags are in a generated table.
        return iter(())

    def auto_candidates(
        self, spec: DeterministicInferenceServiceSpec
    ) -> tuple[AttentionBackend, ...]:
        return VLLM_ATTENTION_BACKENDS[:2]  # Auto is refused with kind VLLM (the CRD) for now

    def effective_backend(self, spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
        return spec.engine.attention_backend

    def has_admin_key(self, engine: EngineSpec) -> bool:
        return False  # vLLM has one --api-key

    def admin_endpoints(self, engine: EngineSpec) -> tuple[bool, str, str]:
        # vLLM's endpoints that change a running server exist only with VLLM_SERVER_DEV_MODE=1
        # (sleep, wake, cache resets, collective RPC) or VLLM_ALLOW_RUNTIME_LORA_UPDATING=1
        # (LoRA load and unload) in its environment (vllm/envs.py); the operator sets neither.
        return (
            True,
            NO_ADMIN_ENDPOINTS,
            "vllm serve as rendered has no endpoint that changes its weights or settings "
            "(neither VLLM_SERVER_DEV_MODE nor VLLM_ALLOW_RUNTIME_LORA_UPDATING is set; "
            "extraArgs are refused)",
        )

    def outputs_fields(self, engine: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in engine.items() if k != "numerics"}  # SGLang's numerics

    def command(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> tuple[list[str], list[str]]:
        engine = spec.engine
        args = [spec.model.path]
        if spec.model.revision:
            args += ["--revision", spec.model.revision]
        args += [HOST_FLAG, "0.0.0.0", "--port", str(c.ENGINE_PORT)]
        if deterministic:
            args += ["--attention-backend", self.effective_backend(spec).flag_value]
        args += ["--tensor-parallel-size", str(engine.tensor_parallel_size)]
        args += ["--seed", str(engine.sampling_seed)]
        caching = engine.radix_cache == Toggle.ENABLED
        args.append("--enable-prefix-caching" if caching else "--no-enable-prefix-caching")
        if engine.cuda_graph == Toggle.DISABLED:
            args.append("--enforce-eager")
        return ["vllm", "serve"], args + list(engine.extra_args)

    def environment(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> list[dict[str, Any]]:
        return [{"name": BATCH_INVARIANT_VARIABLE, "value": "1"}] if deterministic else []

    def probes(self, spec: DeterministicInferenceServiceSpec) -> dict[str, Any]:
        period = 10
        return {
            "startupProbe": {
                **http_probe("/health"),
                "periodSeconds": period,
                "timeoutSeconds": 10,
                "failureThreshold": STARTUP_SECONDS // period,
            },
            "readinessProbe": {
                **http_probe("/health"),
                "periodSeconds": 15,
                "timeoutSeconds": 10,
                "failureThreshold": 3,
            },
            "livenessProbe": {
                **http_probe("/health"),
                "periodSeconds": 20,
                "timeoutSeconds": 10,
                "failureThreshold": 6,
            },
        }

    def security_context(self) -> dict[str, Any]:
        # vLLM's images run as root and write compile caches under $HOME, as SGLang's do.
        return dict(RESTRICTED_CONTAINER)

    def validator_protocol(self, spec: DeterministicInferenceServiceSpec) -> ValidatorProtocol:
        return ValidatorProtocol("openai", vllm_token_ids=True)

    def expectations(self, spec: DeterministicInferenceServiceSpec) -> tuple[tuple[str, str], ...]:
        return ()  # the --expect-* flags read SGLang's /server_info


SUPPORT = VLLM()
