"""What the operator launches and probes differently from one SGLang release to the next.

Read by hand from each release's wheel (the cached ones that table.py is generated from); the
paths are in SGLang's repository (github.com/sgl-project/sglang, under python/). The CUDA-graph
flags come from the generated table itself. docs/sglang-versions.md is the same facts as a table.
"""

from __future__ import annotations

from dataclasses import dataclass

from detinfer.engines.sglang.flags.table import VERSIONS

# SGLang's DETERMINISTIC_ATTENTION_BACKEND_CHOICES (srt/server_args.py; srt/arg_groups/choices.py
# from 0.5.20), which --enable-deterministic-inference checks the attention backend against,
# holds "fa4" from 0.5.16 on.
FA4_FIRST = "0.5.16"
# --admin-api-key was added in 0.5.8 (srt/server_args.py; the auth levels in srt/utils/auth.py):
# before it, --api-key is the only key and also opens the admin endpoints.
ADMIN_API_KEY_FIRST = "0.5.8"
# /model_info and /server_info were added in 0.5.6 (srt/entrypoints/http_server.py); earlier
# releases have only /get_model_info and /get_server_info, which later ones keep as aliases.
NEW_INFO_ENDPOINTS_FIRST = "0.5.6"
# From 0.5.14 --disable-cuda-graph is a DeprecatedStoreTrueAction pointing to
# --cuda-graph-backend-{decode,prefill}=disabled (srt/server_args.py).
CUDA_GRAPH_BACKEND_FLAGS = ("--cuda-graph-backend-decode", "--cuda-graph-backend-prefill")
# From 0.5.22 the scheduler refuses to start when --chunked-prefill-size is below the prefill
# alignment (Scheduler.check_truncation_align_fits_chunk, srt/managers/scheduler.py); before,
# such a prompt waited forever (SGLang issue #36344).
SHORT_CHUNK_REFUSED_FIRST = "0.5.22"


def index(version: str) -> int:
    return VERSIONS.index(version)


def at_least(version: str, first: str) -> bool:
    return index(version) >= index(first)


def fa4_versions() -> tuple[str, ...]:
    """The releases whose deterministic mode accepts --attention-backend fa4."""
    return VERSIONS[index(FA4_FIRST) :]


def admin_key_versions() -> tuple[str, ...]:
    """The releases that have --admin-api-key."""
    return VERSIONS[index(ADMIN_API_KEY_FIRST) :]


def has_admin_key(version: str) -> bool:
    return at_least(version, ADMIN_API_KEY_FIRST)


def cuda_graph_off_flags(version: str) -> list[str]:
    """How `version` spells "no CUDA graphs"."""
    from detinfer.engines.sglang.flags import by_version

    flags = by_version()[version]
    if all(flag in flags for flag in CUDA_GRAPH_BACKEND_FLAGS):
        return [word for flag in CUDA_GRAPH_BACKEND_FLAGS for word in (flag, "disabled")]
    return ["--disable-cuda-graph"]


# SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false makes /health answer 200 without generating
# (srt/entrypoints/http_server.py, srt/environ.py). 0.5.5.post3 added the variable but tests the
# EnvBool object itself (`not envs.SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION`, always false), so
# it works from 0.5.6. /health is exempt from --api-key (add_api_key_middleware), /model_info not.
# The liveness probe reads model_info (builders/deployment.py); the variable keeps /health cheap
# for whatever else polls it (a load balancer's health check, say).
HEALTH_WITHOUT_GENERATION_FIRST = "0.5.6"
HEALTH_GENERATION_VARIABLE = "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"


def liveness_environment(version: str) -> list[dict[str, str]]:
    if at_least(version, HEALTH_WITHOUT_GENERATION_FIRST):
        return [{"name": HEALTH_GENERATION_VARIABLE, "value": "false"}]
    return []


def model_info_path(version: str) -> str:
    return "/model_info" if at_least(version, NEW_INFO_ENDPOINTS_FIRST) else "/get_model_info"


@dataclass(frozen=True)
class NumericsVariable:
    """One environment variable of SGLang's deterministic numerics."""

    name: str
    field: str
    """The spec.engine.numerics field (python name) that sets it."""
    first: str
    last: str
    where: str
    """Where SGLang reads it (for the docs)."""
    tensor_parallel_only: bool = False

    def read_by(self, version: str) -> bool:
        return index(self.first) <= index(version) <= index(self.last)


NUMERICS_VARIABLES = (
    # Fixed KV split of FlashInfer's prefill, and the chunked-prefill alignment with FlashInfer.
    NumericsVariable(
        "SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE",
        "flashinfer_prefill_split_tile_size",
        VERSIONS[0],
        VERSIONS[-1],
        "srt/layers/attention/flashinfer_backend.py, srt/managers/scheduler.py",
    ),
    NumericsVariable(
        "SGLANG_FLASHINFER_DECODE_SPLIT_TILE_SIZE",
        "flashinfer_decode_split_tile_size",
        VERSIONS[0],
        VERSIONS[-1],
        "srt/layers/attention/flashinfer_backend.py",
    ),
    # The chunked-prefill alignment with Triton; 0.5.22 deprecated it ("Deterministic inference
    # on triton no longer aligns prefill chunks", srt/environ.py _DEPRECATED_ENVS).
    NumericsVariable(
        "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE",
        "triton_prefill_truncation_align_size",
        VERSIONS[0],
        "0.5.21",
        "srt/managers/scheduler.py (srt/utils/common.py in 0.5.3.post2, 0.5.3.post3)",
    ),
    NumericsVariable(
        "SGLANG_TRITON_DECODE_SPLIT_TILE_SIZE",
        "triton_decode_split_tile_size",
        VERSIONS[0],
        VERSIONS[-1],
        "srt/layers/attention/triton_backend.py",
    ),
    NumericsVariable(
        "SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_DEEPGEMM",
        "matmul_deep_gemm",
        "0.5.4.post1",
        VERSIONS[-1],
        "srt/batch_invariant_ops/batch_invariant_ops.py",
    ),
    NumericsVariable(
        "SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_FALLBACK_VARIANT",
        "matmul_fallback_variant",
        "0.5.5.post3",
        VERSIONS[-1],
        "srt/batch_invariant_ops/batch_invariant_ops.py",
    ),
    # NCCL_MIN_NCHANNELS = NCCL_MAX_NCHANNELS = this, with TP > 1 in deterministic mode.
    NumericsVariable(
        "SGLANG_DETERMINISTIC_NCCL_NCHANNELS",
        "nccl_channels",
        "0.5.18",
        VERSIONS[-1],
        "srt/arg_groups/attention_hook.py (handle_deterministic_inference)",
        tensor_parallel_only=True,
    ),
)


def prefill_alignment_variable(version: str, backend: str) -> NumericsVariable | None:
    """The variable `version` aligns chunked prefill to with `backend` (SGLang's name) in
    deterministic mode, if any (Scheduler.init_deterministic_inference_config)."""
    name = {
        "flashinfer": "SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE",
        "triton": "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE",
    }.get(backend)
    variable = next((v for v in NUMERICS_VARIABLES if v.name == name), None)
    return variable if variable is not None and variable.read_by(version) else None
