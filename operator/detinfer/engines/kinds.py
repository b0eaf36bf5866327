"""What the API and the builders ask of an engine kind, answered by the kind's own package.

Every kind lives in one package under detinfer.engines: `sglang/` (its flag table per release,
its per-release features, its numerics environment), `reference/` (the reference engine's
flag table). Each package's `kind.py` holds a `SUPPORT` object with the methods below; the API
(extraArgs, Auto's candidates, the admin key) and the builders (the engine container, the
validator's expectations, the revision) call `support(kind)` and never compare kinds
themselves. A new kind is a new package and one line in PACKAGES.

The kind modules are imported when first asked for (importlib), not with this module: they
use the builders' helpers, and the API imports this module.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from detinfer.api.spec import (
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineKind,
    EngineSpec,
)


@dataclass(frozen=True)
class ValidatorProtocol:
    """The validator's --protocol and the options of that protocol the kind needs."""

    protocol: str
    cache_prompt: str | None = None
    """llama.cpp's cache_prompt on every request, "on" or "off" (--cache-prompt): a request's
    own value wins over the server's default."""
    vllm_token_ids: bool = False
    """vLLM's return_tokens_as_token_ids (--vllm-token-ids): token ids compared, not strings."""


SGLANG_PROTOCOL = ValidatorProtocol("sglang")
NO_ADMIN_ENDPOINTS = "NoAdminEndpoints"
"""AdminEndpointsClosed's reason for an engine that, as rendered, has none."""

PACKAGES: dict[EngineKind, str] = {
    EngineKind.SGLANG: "detinfer.engines.sglang",
    EngineKind.REFERENCE: "detinfer.engines.reference",
    EngineKind.LLAMA_CPP: "detinfer.engines.llamacpp",
    EngineKind.VLLM: "detinfer.engines.vllm",
}


class EngineKindSupport(Protocol):
    app_name: str
    """app.kubernetes.io/name of the kind's pods and Services."""

    # ---- the API: what a spec of this kind may say ----

    def extra_args_errors(
        self, spec: DeterministicInferenceServiceSpec
    ) -> Iterator[tuple[int, str]]:
        """(index in extraArgs, message) for every item the kind's flags refuse."""
        ...

    def auto_candidates(
        self, spec: DeterministicInferenceServiceSpec
    ) -> tuple[AttentionBackend, ...]:
        """The backends `attentionBackend: Auto` tries, first to last."""
        ...

    def effective_backend(self, spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
        """The backend a spec without Auto runs."""
        ...

    def has_admin_key(self, engine: EngineSpec) -> bool:
        """Whether the engine takes --admin-api-key."""
        ...

    def admin_endpoints(self, engine: EngineSpec) -> tuple[bool, str, str]:
        """AdminEndpointsClosed: (closed, reason, message) for who can change a validated pod's
        weights, adapters or logging."""
        ...

    def outputs_fields(self, engine: dict[str, Any]) -> dict[str, Any]:
        """spec.engine as the wire has it, less the fields that cannot change this kind's
        outputs (the revision hashes the rest)."""
        ...

    # ---- the builders: the engine's container and the validator's expectations ----

    def command(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> tuple[list[str], list[str]]:
        """The container's command and args, extraArgs last, the keys not yet."""
        ...

    def environment(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> list[dict[str, Any]]:
        """The kind's own environment variables (the builders add the cache paths and keys)."""
        ...

    def probes(self, spec: DeterministicInferenceServiceSpec) -> dict[str, Any]:
        """startupProbe, readinessProbe and livenessProbe of the engine container."""
        ...

    def security_context(self) -> dict[str, Any]:
        """The engine container's securityContext."""
        ...

    def validator_protocol(self, spec: DeterministicInferenceServiceSpec) -> ValidatorProtocol:
        """How the validator speaks to this kind's servers."""
        ...

    def expectations(self, spec: DeterministicInferenceServiceSpec) -> tuple[tuple[str, str], ...]:
        """The validator's --expect-* flags: what the server must say it runs."""
        ...


@functools.cache
def support(kind: EngineKind) -> EngineKindSupport:
    module = importlib.import_module(f"{PACKAGES[kind]}.kind")
    found: EngineKindSupport = module.SUPPORT
    return found


def of(spec: DeterministicInferenceServiceSpec) -> EngineKindSupport:
    return support(spec.engine.kind)
