"""spec of a DeterministicInferenceService: what the user asks for."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, model_validator

from detinfer import validation_defaults
from detinfer.api import extra_args as extra_arg_rules
from detinfer.api.base import StrictKubeModel, Toggle
from detinfer.api.cel import CelRule
from detinfer.api.extra_args import MANAGED_FLAGS, NONDETERMINISTIC_FLAGS, UNSAFE_FLAGS
from detinfer.api.quantity import ByteQuantity, CpuQuantity
from detinfer.engines.sglang import features
from detinfer.engines.sglang import flags as sglang_flags

__all__ = ["MANAGED_FLAGS", "NONDETERMINISTIC_FLAGS", "UNSAFE_FLAGS"]

LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
FINGERPRINT_PATTERN = r"^sha256:[0-9a-f]{64}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
IMAGE_DIGEST_RE = "@sha256:[0-9a-f]{64}$"


class EngineKind(StrEnum):
    SGLANG = "SGLang"
    REFERENCE = "Reference"
    LLAMA_CPP = "LlamaCpp"
    VLLM = "VLLM"


DEFAULT_ENGINE_KIND = EngineKind.SGLANG


class AttentionBackend(StrEnum):
    """The attention backends SGLang accepts with --enable-deterministic-inference (0.5.x;
    FA4 from 0.5.16, features.FA4_FIRST), the reference engine's (Tiled, Tree, SplitKV: detinfer
    engine --attention-backend), and Auto: the operator tries each candidate and serves with
    the cheapest that passes (controller/search.py, docs/overhead.md)."""

    FA3 = "FA3"
    FA4 = "FA4"
    FLASHINFER = "FlashInfer"
    TRITON = "Triton"
    TILED = "Tiled"
    TREE = "Tree"
    SPLIT_KV = "SplitKV"
    """Not batch-invariant: a planted fault, there for the search to reject (docs/engine.md)."""
    FLASH_ATTN = "FlashAttn"
    TRITON_ATTN = "TritonAttn"
    FLASH_ATTN_MLA = "FlashAttnMLA"
    TRITON_MLA = "TritonMLA"
    AUTO = "Auto"

    @property
    def flag_value(self) -> str:
        """The engine's --attention-backend value (Auto has none: the search picks one)."""
        if self is AttentionBackend.AUTO:
            raise ValueError("attentionBackend Auto names no backend: the search picks one")
        return {
            "FA3": "fa3",
            "FA4": "fa4",
            "FlashInfer": "flashinfer",
            "Triton": "triton",
            "Tiled": "tiled",
            "Tree": "tree",
            "SplitKV": "split_kv",
            "FlashAttn": "FLASH_ATTN",
            "TritonAttn": "TRITON_ATTN",
            "FlashAttnMLA": "FLASH_ATTN_MLA",
            "TritonMLA": "TRITON_MLA",
        }[self.value]


VLLM_ATTENTION_BACKENDS = (
    AttentionBackend.FLASH_ATTN,
    AttentionBackend.TRITON_ATTN,
    AttentionBackend.FLASH_ATTN_MLA,
    AttentionBackend.TRITON_MLA,
)
"""vLLM's backends whose supports_batch_invariance() is True (vllm/v1/attention/backends/:
flash_attn.py, triton_attn.py, mla/flashattn_mla.py, mla/triton_mla.py), in the order Auto would
try them; the MLA ones serve MLA models (DeepSeek) only."""

VLLM_NAMES = "[" + ", ".join(f"'{b.value}'" for b in VLLM_ATTENTION_BACKENDS) + "]"

REFERENCE_ATTENTION_BACKENDS = (
    AttentionBackend.TILED,
    AttentionBackend.TREE,
    AttentionBackend.SPLIT_KV,
)
"""The reference engine's, in the order Auto tries them (engine/config.ATTENTION_BACKENDS)."""


def _supported_sglang_version(value: str) -> str:
    if value not in sglang_flags.VERSIONS:
        raise ValueError(
            f"{value!r} is not a supported SGLang release (one of "
            f"{sglang_flags.supported_range()}, .postN included; docs/sglang-versions.md)"
        )
    return value


SGLangVersion = Annotated[
    str,
    AfterValidator(_supported_sglang_version),
    Field(json_schema_extra={"enum": list(sglang_flags.VERSIONS)}),
]


class FingerprintPolicy(StrEnum):
    RECORD = "Record"
    ENFORCE = "Enforce"


class Suite(StrEnum):
    """A validation suite; the fingerprint is always computed."""

    SINGLE = "Single"
    MIXED = "Mixed"
    PREFIX = "Prefix"
    RADIX_CACHE = "RadixCache"
    PREFILL_DECODE = "PrefillDecode"
    LONG_CONTEXT = "LongContext"
    CONCURRENT = "Concurrent"
    SAMPLING = "Sampling"
    CROSS_REPLICA = "CrossReplica"


class ModelSpec(StrictKubeModel):
    """The model to serve, pinned."""

    path: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^\S+$")]
    """Hugging Face hub id (org/name), or an absolute path to the weights' directory: inside
    the model cache volume (/var/cache/detinfer/models/...) or inside the image. A directory
    has no revision: SGLang reads it as it is."""

    revision: Annotated[str | None, Field(pattern=r"^[0-9a-f]{40}$", max_length=40)] = None
    """The model's commit hash (40 hex). Required unless allowUnpinnedRevision is true."""

    allow_unpinned_revision: bool = False
    """Allow a model without a revision. Its outputs can then change under you."""

    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$", max_length=64)] = None
    """kind LlamaCpp (required there, not allowed elsewhere): the sha256 of the GGUF file at
    path (64 hex). The pod checks the file against it before the server starts, and does not
    start the server on a mismatch."""

    cache_volume_claim: Annotated[
        str | None, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    ] = None
    """A PersistentVolumeClaim mounted at /var/cache/detinfer/models (HF_HOME): downloaded
    weights survive pod restarts and are shared by the replicas (ReadWriteMany, or one node),
    and weights already on it are read from there (path). An emptyDir when unset: every pod
    downloads the model again."""

    cel_rules = (
        CelRule(
            rule="has(self.revision) || self.allowUnpinnedRevision || has(self.sha256)",
            message=(
                "model.revision is required: pin the model to a commit hash (a GGUF file: its "
                "sha256), or set allowUnpinnedRevision: true"
            ),
            message_expression=(
                "'model.revision is required for model ' + self.path + "
                "': pin it to a commit hash (a GGUF file: its sha256), or set "
                "allowUnpinnedRevision: true'"
            ),
            field_path=".revision",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="!self.path.startsWith('/') || !has(self.revision)",
            message=(
                "model.revision does not apply to a local directory: SGLang reads it as it is; "
                "remove revision and set allowUnpinnedRevision: true"
            ),
            message_expression=(
                "'model.revision does not apply to the local directory ' + self.path + "
                "': SGLang reads it as it is; remove revision and set allowUnpinnedRevision: true'"
            ),
            field_path=".revision",
            reason="FieldValueForbidden",
        ),
    )


class SecretKeySelector(StrictKubeModel):
    """A key of a Secret in the resource's namespace. The operator never reads it: the kubelet
    puts its value into the pods' environment (valueFrom.secretKeyRef)."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
    """The Secret's name."""

    key: Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)]
    """The key in the Secret's data."""


TILE = Field(ge=16, le=1048576)


class NumericsSpec(StrictKubeModel):
    """SGLang's deterministic numerics, set as environment variables of the engine, each only
    where the pinned release reads it (docs/sglang-versions.md). The defaults are SGLang's own:
    pinning them keeps an image that changes its defaults from changing the outputs. Ignored
    with kind: Reference."""

    flashinfer_prefill_split_tile_size: Annotated[int, TILE] = 4096
    """SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE: FlashInfer's fixed KV split in prefill, and
    what chunked prefill is aligned to with FlashInfer."""

    flashinfer_decode_split_tile_size: Annotated[int, TILE] = 2048
    """SGLANG_FLASHINFER_DECODE_SPLIT_TILE_SIZE: FlashInfer's fixed KV split in decode."""

    triton_prefill_truncation_align_size: Annotated[int, TILE] = 4096
    """SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE: what chunked prefill is aligned to with
    Triton (read up to 0.5.21)."""

    triton_decode_split_tile_size: Annotated[int, TILE] = 256
    """SGLANG_TRITON_DECODE_SPLIT_TILE_SIZE: Triton's fixed KV split in decode."""

    matmul_deep_gemm: Toggle = Toggle.ENABLED
    """SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_DEEPGEMM: batch-invariant matmuls through DeepGEMM
    where it applies (from 0.5.4.post1)."""

    matmul_fallback_variant: Toggle = Toggle.DISABLED
    """SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_FALLBACK_VARIANT: the fallback variant of the
    batch-invariant matmul kernel (from 0.5.5.post3)."""

    nccl_channels: Annotated[int, Field(ge=1, le=64)] = 8
    """SGLANG_DETERMINISTIC_NCCL_NCHANNELS: NCCL channels of the tensor-parallel all-reduce
    (NCCL_MIN/MAX_NCHANNELS; from 0.5.18, with tensorParallelSize > 1 only)."""


class EngineSpec(StrictKubeModel):
    """The inference engine and every setting that can change its outputs."""

    image: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^\S+$")]
    """Container image, pinned by digest (name@sha256:<64 hex>)."""

    kind: EngineKind = DEFAULT_ENGINE_KIND
    """SGLang; VLLM: vllm serve with VLLM_BATCH_INVARIANT=1; LlamaCpp: llama.cpp's llama-server,
    with a GGUF model pinned by model.sha256 (docs/engines.md#what-the-operator-renders); or
    Reference: detinfer's small CPU/GPU reference engine, for demos and tests."""

    version: SGLangVersion | None = None
    """The SGLang release the image runs, e.g. "0.5.23" (required with kind: SGLang, not
    allowed with kind: Reference). It selects the flags extraArgs is checked against and the
    flags, environment and probes the operator renders (docs/sglang-versions.md)."""

    allow_mutable_image: bool = False
    """Allow an image without a digest. A moved tag can change the outputs."""

    attention_backend: AttentionBackend = AttentionBackend.FA3
    """Attention backend. SGLang: one of those it supports in deterministic mode (FA4 needs
    SGLang 0.5.16 or later and Blackwell (SM100) GPUs). VLLM: one its batch invariance supports
    (FlashAttn, TritonAttn; FlashAttnMLA, TritonMLA for MLA models). Reference: Tiled, Tree or SplitKV (the
    SGLang names mean Tiled, its default). Auto: try each candidate for the GPU product,
    validate it, measure its overhead, and serve with the cheapest that passes (needs
    overhead.enabled; status.attentionSearch; docs/overhead.md)."""

    numerics: NumericsSpec = NumericsSpec()

    tensor_parallel_size: Annotated[int, Field(ge=1, le=16)] = 1
    """GPUs one model instance is split over (SGLang --tp-size)."""

    sampling_seed: Annotated[int, Field(ge=0, le=2147483647)] = validation_defaults.SAMPLING_SEED
    """Two things, and only these: the server's --random-seed (SGLang seeds torch's generators with
    it; in default mode those draw the samples) and the sampling_seed that every validation request
    sends. It is not a default for clients: in deterministic mode SGLang samples a request that
    sends no sampling_seed (OpenAI: seed) with 42, whatever this value is. Clients that want the
    validated behaviour send their own seed (docs/clients.md)."""

    cuda_graph: Toggle = Toggle.ENABLED
    """CUDA graphs; they make deterministic mode about 2.8x faster (LMSYS, H100)."""

    radix_cache: Toggle = Toggle.ENABLED
    """The prefix (radix) cache. SGLang turns it off itself with FlashInfer in deterministic mode.
    LlamaCpp: the prompt cache (--cache-prompt, --no-cache-prompt), which changes the logprobs
    of a prompt whose prefix it holds (docs/engines.md)."""

    slots: Annotated[int | None, Field(ge=1, le=256)] = None
    """kind LlamaCpp only: llama-server's --parallel, the requests it decodes together (1 when
    unset). The validator decides whether more than one stays deterministic."""

    deterministic_inference: Toggle = Toggle.ENABLED
    """--enable-deterministic-inference. Disabled is allowed only for kind Reference, to show
    what the validator catches."""

    api_key_secret: SecretKeySelector | None = None
    """The client API key (SGLang --api-key), from a Secret: every request but /health*,
    /ready* and /metrics must then send it (Authorization: Bearer). The engine gets it through
    its environment, and so do the validation and benchmark Jobs; it is never an argument or in
    a report. Before SGLang 0.5.8 it is also the only key of the admin endpoints."""

    admin_api_key_secret: SecretKeySelector | None = None
    """The admin API key (SGLang --admin-api-key, from 0.5.8), from a Secret: the only key that
    opens the admin endpoints (weight updates, LoRA adapters, internal state, logging, cache).
    Unset: each pod makes a random one when it starts, which is never written to the API.
    SGLang also answers it on /server_info to any caller it serves
    (docs/architecture.md#threat-model)."""

    extra_args: Annotated[
        list[
            Annotated[
                str,
                Field(
                    max_length=1024,
                    json_schema_extra={
                        "x-kubernetes-validations": [
                            r.to_schema() for r in extra_arg_rules.item_rules()
                        ]
                    },
                ),
            ]
        ],
        Field(max_length=64),
    ] = []
    """More engine flags, appended last, one word per item ("--flag", "value" or
    "--flag=value"). Each flag must be written in full (no abbreviations) and, for SGLang, be one
    of the release in engine.version (docs/sglang.md); for kind Reference, one of `detinfer
    engine`'s. Flags that fight a spec field or break determinism are refused under every alias,
    and so are --config and --help; --chunked-prefill-size must not be below the prefill
    alignment (engine.numerics)."""

    # Rules on each extraArgs item (self is the string); the CRD has them at the items' node.
    item_cel_rules: ClassVar[dict[str, tuple[CelRule, ...]]] = {
        "extra_args": extra_arg_rules.item_rules()
    }

    cel_rules = (
        CelRule(
            rule="self.allowMutableImage || self.image.matches('" + IMAGE_DIGEST_RE + "')",
            message="engine.image must be pinned by digest (@sha256:<64 hex>)",
            message_expression=(
                "'engine.image ' + self.image + ' is not pinned by digest (@sha256:<64 hex>); "
                "pin it, or set allowMutableImage: true'"
            ),
            field_path=".image",
        ),
        CelRule(
            rule="self.kind != 'Reference' || self.tensorParallelSize == 1",
            message="engine.tensorParallelSize must be 1 with kind: Reference (it runs on one device)",
            field_path=".tensorParallelSize",
        ),
        CelRule(
            rule="self.deterministicInference == 'Enabled' || self.kind == 'Reference'",
            message=(
                "engine.deterministicInference: Disabled is only allowed with kind: Reference"
            ),
            field_path=".deterministicInference",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="self.kind != 'SGLang' || has(self.version)",
            message=(
                "engine.version is required with kind: SGLang: the SGLang release the image runs, "
                f"one of {sglang_flags.supported_range()} (docs/sglang-versions.md)"
            ),
            field_path=".version",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.kind != 'Reference' || !has(self.version)",
            message=(
                "engine.version must not be set with kind: Reference: it names an SGLang release, "
                "and the reference engine is detinfer's own"
            ),
            field_path=".version",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule=(
                "self.attentionBackend != 'FA4' || !has(self.version) || self.version in ["
                + ", ".join(f"'{v}'" for v in features.fa4_versions())
                + "]"
            ),
            message=(
                f"engine.attentionBackend FA4 needs SGLang {features.FA4_FIRST} or later: earlier "
                "releases refuse fa4 with --enable-deterministic-inference"
            ),
            message_expression=(
                f"'engine.attentionBackend FA4 needs SGLang {features.FA4_FIRST} or later: "
                "SGLang ' + self.version + ' refuses fa4 with --enable-deterministic-inference'"
            ),
            field_path=".attentionBackend",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="self.kind != 'SGLang' || !(self.attentionBackend in ['Tiled', 'Tree', 'SplitKV'])",
            message=(
                "engine.attentionBackend Tiled, Tree and SplitKV are backends of the reference "
                "engine: SGLang takes FA3, FA4, FlashInfer, Triton or Auto"
            ),
            message_expression=(
                "'engine.attentionBackend ' + self.attentionBackend + ' is a backend of the "
                "reference engine: SGLang takes FA3, FA4, FlashInfer, Triton or Auto'"
            ),
            field_path=".attentionBackend",
            reason="FieldValueInvalid",
        ),
        CelRule(
            rule=f"self.kind != 'SGLang' || !(self.attentionBackend in {VLLM_NAMES})",
            message=(
                "engine.attentionBackend FlashAttn, TritonAttn, FlashAttnMLA and TritonMLA are "
                "backends of vLLM: SGLang takes FA3, FA4, FlashInfer, Triton or Auto"
            ),
            message_expression=(
                "'engine.attentionBackend ' + self.attentionBackend + ' is a backend of vLLM: "
                "SGLang takes FA3, FA4, FlashInfer, Triton or Auto'"
            ),
            field_path=".attentionBackend",
            reason="FieldValueInvalid",
        ),
        CelRule(
            rule=f"self.kind != 'VLLM' || self.attentionBackend in {VLLM_NAMES}",
            message=(
                "engine.attentionBackend must be one that vLLM's batch invariance supports with "
                "kind: VLLM: FlashAttn, TritonAttn, FlashAttnMLA or TritonMLA"
            ),
            message_expression=(
                "'engine.attentionBackend ' + self.attentionBackend + ' is not one that the batch "
                "invariance of vLLM supports: with kind: VLLM use FlashAttn, TritonAttn, "
                "FlashAttnMLA or TritonMLA (VLLM_BATCH_INVARIANT=1 refuses the others)'"
            ),
            field_path=".attentionBackend",
            reason="FieldValueInvalid",
        ),
        CelRule(
            rule="self.kind != 'VLLM' || !has(self.version)",
            message=(
                "engine.version must not be set with kind: VLLM yet: the image's digest pins the "
                "vLLM release (0.13 or later, which has --attention-backend)"
            ),
            field_path=".version",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule=(
                "!has(self.adminApiKeySecret) || self.kind == 'Reference' || "
                "(has(self.version) && self.version in ["
                + ", ".join(f"'{v}'" for v in features.admin_key_versions())
                + "])"
            ),
            message=(
                f"engine.adminApiKeySecret needs SGLang {features.ADMIN_API_KEY_FIRST} or later: "
                "earlier releases have no --admin-api-key (there apiKeySecret opens the admin "
                "endpoints)"
            ),
            field_path=".adminApiKeySecret",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="self.kind != 'LlamaCpp' || !has(self.version)",
            message=(
                "engine.version must not be set with kind: LlamaCpp: the image's digest pins "
                "the llama.cpp build"
            ),
            field_path=".version",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="!has(self.slots) || self.kind == 'LlamaCpp'",
            message="engine.slots applies to kind: LlamaCpp only (llama-server's --parallel)",
            field_path=".slots",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="self.kind != 'LlamaCpp' || self.attentionBackend == 'FA3'",
            message=(
                "engine.attentionBackend does not apply to kind: LlamaCpp: llama-server picks "
                "its own kernels (the validator measures the result); leave it unset"
            ),
            field_path=".attentionBackend",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="self.kind != 'LlamaCpp' || self.tensorParallelSize == 1",
            message="engine.tensorParallelSize must be 1 with kind: LlamaCpp",
            field_path=".tensorParallelSize",
        ),
        CelRule(
            rule=(
                "!(self.kind in ['LlamaCpp', 'VLLM']) || !has(self.extraArgs) || "
                "size(self.extraArgs) == 0"
            ),
            message=(
                "engine.extraArgs must be empty with kind: LlamaCpp or VLLM: their flags are "
                "not in a table the operator checks them against yet"
            ),
            field_path=".extraArgs",
            reason="FieldValueForbidden",
        ),
        *extra_arg_rules.engine_rules(),
    )


class ResourcesSpec(StrictKubeModel):
    """What one replica needs from a node."""

    gpus_per_replica: Annotated[int, Field(ge=0, le=16)] = 1
    """nvidia.com/gpu per pod. 0 runs the Reference engine on CPU."""

    gpu_product: Annotated[str | None, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)] = None
    """Required value of the node label nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3.
    Kernels differ between GPU models, and so can outputs."""

    cpu: CpuQuantity | None = None
    """CPU request and limit of the engine container (a quantity, e.g. "8" or "500m"; at most
    2^63-1 millicores)."""

    memory: ByteQuantity | None = None
    """Memory request and limit of the engine container (a quantity, e.g. "64Gi"; at most 2^63-1
    bytes)."""

    shared_memory_size: ByteQuantity = "16Gi"
    """Size of the memory-backed /dev/shm (NCCL and the engine's workers need a large one); a
    quantity of at most 2^63-1 bytes."""


class ValidationSpec(StrictKubeModel):
    """How the pods are proven deterministic before they take traffic."""

    suites: Annotated[list[Suite], Field(max_length=len(Suite))] = list(Suite)
    """Suites to run; the fingerprint is always computed."""

    trials: Annotated[int, Field(ge=1, le=128)] = validation_defaults.TRIALS
    """Samples per suite (batch sizes, prompts or concurrent requests)."""

    max_new_tokens: Annotated[int, Field(ge=1, le=2048)] = validation_defaults.MAX_NEW_TOKENS
    """Tokens generated per sample."""

    max_batch_size: Annotated[int | None, Field(ge=1, le=4096)] = None
    """Single's largest batch. Unset: up to the engine's own largest batch, read from its
    /server_info (SGLang's resolved max_running_requests; 8 tokens a sequence past 33), and at
    least 2 x trials + 1. Set it where an engine does not report its limit, to the batch it
    really runs (vLLM's max_num_seqs, llama-server's slots)."""

    fingerprint_policy: FingerprintPolicy = FingerprintPolicy.RECORD
    """Record: remember the first fingerprint of a revision and hold later pods to it.
    Enforce: every pod must match expectedFingerprint."""

    expected_fingerprint: Annotated[
        str | None, Field(pattern=FINGERPRINT_PATTERN, max_length=71)
    ] = None
    """sha256:<64 hex>; required when fingerprintPolicy is Enforce."""

    revalidate_every_seconds: Annotated[int, Field(ge=0, le=2592000)] = 3600
    """Run the validation again this often to catch drift; 0 never."""

    timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = validation_defaults.TIMEOUT_SECONDS
    """Deadline of one validation Job."""

    cel_rules = (
        CelRule(
            rule="self.fingerprintPolicy != 'Enforce' || has(self.expectedFingerprint)",
            message="validation.expectedFingerprint is required when fingerprintPolicy is Enforce",
            field_path=".expectedFingerprint",
            reason="FieldValueRequired",
        ),
        CelRule(
            # The API server's cost estimator refuses string(int) in a messageExpression, so
            # rules about numbers have fixed messages.
            rule="self.revalidateEverySeconds == 0 || self.revalidateEverySeconds >= 60",
            message="validation.revalidateEverySeconds must be 0 (never) or at least 60",
            field_path=".revalidateEverySeconds",
        ),
    )


MAX_LEVELS = 6
"""Concurrency levels in one workload: the overhead summary of six still fits in 4096 bytes."""


class OverheadWorkload(StrictKubeModel):
    """A fixed workload, sent the same to the deterministic pod and to the baseline (the
    benchmark Job's, and `detinfer bench`'s)."""

    concurrency: Annotated[
        list[Annotated[int, Field(ge=1, le=256)]], Field(min_length=1, max_length=MAX_LEVELS)
    ] = [1, 8]
    """Concurrency levels: requests in flight at once; each level is measured separately."""
    requests: Annotated[int, Field(ge=1, le=4096)] = 32
    """Requests per level, per round and per endpoint."""
    input_tokens: Annotated[int, Field(ge=1, le=32768)] = 256
    """Prompt length in tokens (token ids sent as input_ids)."""
    output_tokens: Annotated[int, Field(ge=1, le=32768)] = 128
    """Generated tokens per request (ignore_eos, so every request generates exactly this many)."""
    rounds: Annotated[int, Field(ge=1, le=16)] = 3
    """Rounds per level; the order of the two endpoints alternates from round to round, so drift
    of the machine hits both; the spread of tokens/s over the rounds is reported."""
    seed: Annotated[int, Field(ge=0, le=2147483647)] = 0
    """Seeds the prompts' token ids; each round gets new prompts (no cached prefix helps either
    side), the same for both endpoints."""

    @model_validator(mode="after")
    def _distinct_levels(self) -> OverheadWorkload:
        if len(set(self.concurrency)) != len(self.concurrency):
            raise ValueError(f"concurrency: {self.concurrency} repeats a level")
        return self


class OverheadSpec(StrictKubeModel):
    """What determinism costs, measured by the operator on the cluster's own GPUs
    (docs/overhead.md): once the current revision is Ready, a temporary baseline (the same image,
    model, revision, GPUs and TP size without the determinism flag, in no Service) and a
    benchmark Job that drives the workload against one validated pod and the baseline; the
    figures go to status.overhead, then both are deleted. The baseline needs the GPUs of one
    more replica while it lives. Serving never waits for it."""

    enabled: bool = False
    """Measure the overhead of each new revision (and on the schedule below)."""

    workload: OverheadWorkload = OverheadWorkload()

    remeasure_every_seconds: Annotated[int, Field(ge=0, le=2592000)] = 0
    """Measure again this often (each time a baseline runs again); 0: once per revision (and
    again when the workload changes)."""

    timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    """Deadline of the baseline's first ready pod (counted from the baseline Deployment's
    creation), and of the benchmark Job after it; a measurement that misses either could not
    measure, and is tried again an hour later."""

    cel_rules = (
        CelRule(
            rule="self.remeasureEverySeconds == 0 || self.remeasureEverySeconds >= 3600",
            message=(
                "overhead.remeasureEverySeconds must be 0 (once per revision) or at least 3600: "
                "every measurement runs a baseline on GPUs of its own"
            ),
            field_path=".remeasureEverySeconds",
        ),
    )


# No backslash: CEL string literals take none of RE2's escapes ("\." fails to compile there).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


class LabelSelector(StrictKubeModel):
    """Labels an object must all carry (a Kubernetes label selector's matchLabels)."""

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]],
        Field(max_length=16),
    ] = {}
    """Label keys and values; empty: every object."""


class ClientPeer(StrictKubeModel):
    """Pods that may call the serving port, as a NetworkPolicy peer: podSelector alone selects
    pods in the resource's namespace, namespaceSelector alone every pod of those namespaces,
    both the selected pods of the selected namespaces."""

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None

    cel_rules = (
        CelRule(
            rule="has(self.namespaceSelector) || has(self.podSelector)",
            message="networkPolicy.clients: each peer needs namespaceSelector or podSelector",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule=" && ".join(
                f"(!has(self.{s}) || self.{s}.matchLabels.all(k, size(k) <= 253 && "
                f"k.matches('{LABEL_KEY_PATTERN}')))"
                for s in ("namespaceSelector", "podSelector")
            ),
            message="networkPolicy.clients: every matchLabels key must be a label key "
            "([prefix/]name, the name at most 63 characters)",
        ),
    )


class NetworkPolicySpec(StrictKubeModel):
    """NetworkPolicies that admit only the clients, the resource's own Jobs and the metrics
    scrape to its engine pods, and only its benchmark Job to its baseline pods. They take
    effect where the cluster's network plugin enforces NetworkPolicies."""

    enabled: bool = True
    """Make them (and delete them when set to false)."""

    clients: Annotated[list[ClientPeer], Field(max_length=16)] = []
    """Who may call the serving port; empty: every pod in the resource's namespace. The
    resource's validation and benchmark Jobs, the operator's namespace and the chart's
    monitoring namespace are admitted in any case."""


class DeterministicInferenceServiceSpec(StrictKubeModel):
    """The desired deployment."""

    model: ModelSpec
    engine: EngineSpec
    replicas: Annotated[int, Field(ge=0, le=64)] = 1
    """Engine pods. Each is validated before it takes traffic."""

    resources: ResourcesSpec = ResourcesSpec()
    validation: ValidationSpec = ValidationSpec()
    overhead: OverheadSpec = OverheadSpec()
    network_policy: NetworkPolicySpec = NetworkPolicySpec()

    cel_rules = (
        CelRule(
            rule=(
                "self.engine.kind in ['Reference', 'LlamaCpp'] || "
                "self.resources.gpusPerReplica >= self.engine.tensorParallelSize"
            ),
            message=(
                "resources.gpusPerReplica must be at least engine.tensorParallelSize: "
                "every tensor-parallel rank needs its own GPU"
            ),
            field_path=".resources.gpusPerReplica",
        ),
        CelRule(
            rule=(
                "self.engine.attentionBackend != 'Auto' || (has(self.overhead) && "
                "has(self.overhead.enabled) && self.overhead.enabled)"
            ),
            message=(
                "engine.attentionBackend Auto needs overhead.enabled: the search measures the "
                "overhead of each backend that passes"
            ),
            field_path=".overhead.enabled",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.engine.kind != 'LlamaCpp' || has(self.model.sha256)",
            message=(
                "model.sha256 is required with kind: LlamaCpp: the sha256 of the GGUF file, "
                "checked before the server starts"
            ),
            field_path=".model.sha256",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.engine.kind == 'LlamaCpp' || !has(self.model.sha256)",
            message="model.sha256 applies to kind: LlamaCpp only (a GGUF file)",
            field_path=".model.sha256",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule=(
                "self.engine.kind != 'LlamaCpp' || "
                "(self.model.path.startsWith('/') && self.model.path.endsWith('.gguf'))"
            ),
            message=(
                "model.path must be the absolute path of a .gguf file with kind: LlamaCpp (in "
                "the model cache volume, /var/cache/detinfer/models/..., or in the image)"
            ),
            message_expression=(
                "'model.path ' + self.model.path + ' is not the absolute path of a .gguf file, "
                "as kind: LlamaCpp needs (in the model cache volume, /var/cache/detinfer/models/...,"
                " or in the image)'"
            ),
            field_path=".model.path",
        ),
        CelRule(
            rule=(
                "!(self.engine.kind in ['LlamaCpp', 'VLLM']) || !has(self.overhead) || "
                "!has(self.overhead.enabled) || !self.overhead.enabled"
            ),
            message=(
                "overhead.enabled is not supported with kind: LlamaCpp or VLLM yet: the "
                "benchmark speaks SGLang's API only"
            ),
            field_path=".overhead.enabled",
            reason="FieldValueForbidden",
        ),
    )
