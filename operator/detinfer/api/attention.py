"""engine.attentionBackend Auto: the candidates the search tries, and the spec with one chosen.

The candidates are the backends the engine accepts in deterministic mode on the resource's GPU
product, in the order they are tried:

- Reference: Tiled, Tree, SplitKV (engine/config.ATTENTION_BACKENDS; SplitKV is the planted
  fault, not batch-invariant, there for the search to reject).
- SGLang (0.5.x, srt/arg_groups/attention_hook.py: deterministic mode allows fa3, fa4,
  flashinfer and triton on NVIDIA GPUs): FA3 on Hopper (H100, H200, H800, H20, GH200), FA4 on
  Blackwell (B100, B200, B300, GB200, GB300) from SGLang 0.5.16, FlashInfer and Triton
  everywhere. Without resources.gpuProduct the architecture is unknown, so only FlashInfer and
  Triton are tried.
"""

from __future__ import annotations

import re

from detinfer.api.spec import (
    REFERENCE_ATTENTION_BACKENDS,
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineKind,
)
from detinfer.sglang_flags import features

_HOPPER = re.compile(r"(^|[^A-Z0-9])(GH200|H100|H200|H800|H20)([^0-9]|$)", re.IGNORECASE)
_BLACKWELL = re.compile(r"(^|[^A-Z0-9])(GB200|GB300|B100|B200|B300)([^0-9]|$)", re.IGNORECASE)


def auto_candidates(spec: DeterministicInferenceServiceSpec) -> tuple[AttentionBackend, ...]:
    """The backends `attentionBackend: Auto` tries, first to last."""
    if spec.engine.kind == EngineKind.REFERENCE:
        return REFERENCE_ATTENTION_BACKENDS
    product = spec.resources.gpu_product or ""
    found: list[AttentionBackend] = []
    if _HOPPER.search(product):
        found.append(AttentionBackend.FA3)
    if _BLACKWELL.search(product) and spec.engine.version in features.fa4_versions():
        found.append(AttentionBackend.FA4)
    return (*found, AttentionBackend.FLASHINFER, AttentionBackend.TRITON)


def effective_backend(spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
    """The backend a spec without Auto runs: for the reference engine, the SGLang names (the
    schema's default FA3 among them) mean its default, Tiled."""
    backend = spec.engine.attention_backend
    if spec.engine.kind == EngineKind.REFERENCE and backend not in REFERENCE_ATTENTION_BACKENDS:
        return AttentionBackend.TILED
    return backend
