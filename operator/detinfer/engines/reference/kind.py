"""What the operator renders for `engine.kind: Reference` (detinfer.engines.kinds).

`detinfer engine`, the reference engine, speaks SGLang's command line and HTTP API, so it shares
SGLang's helpers (engines/sglang/kind.py). It differs where it is not SGLang: its own image and
flag table (flags.py), `--device` from spec.resources.gpusPerReplica, its own attention backends
(Tiled, Tree, SplitKV; SplitKV is the planted fault, not batch-invariant, there for Auto to
reject), no numerics, an admin key in every release, and it runs as a non-root user on a
read-only root filesystem.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from detinfer.api import extra_args
from detinfer.api.base import Toggle
from detinfer.api.spec import (
    REFERENCE_ATTENTION_BACKENDS,
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineSpec,
)
from detinfer.builders.common import NON_ROOT_CONTAINER, http_probe
from detinfer.builders.process_line import ENGINE_COMMAND
from detinfer.engines.kinds import SGLANG_PROTOCOL, ValidatorProtocol
from detinfer.engines.sglang.kind import (
    admin_endpoints,
    common_expectations,
    leading_args,
    model_info_liveness,
    seed_args,
    trailing_args,
)


class Reference:
    app_name = "detinfer-reference-engine"

    def extra_args_errors(
        self, spec: DeterministicInferenceServiceSpec
    ) -> Iterator[tuple[int, str]]:
        return extra_args.flag_errors(extra_args.reference(), spec.engine.extra_args)

    def auto_candidates(
        self, spec: DeterministicInferenceServiceSpec
    ) -> tuple[AttentionBackend, ...]:
        return REFERENCE_ATTENTION_BACKENDS

    def effective_backend(self, spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
        """The SGLang names (the schema's default FA3 among them) mean the engine's default,
        Tiled."""
        backend = spec.engine.attention_backend
        return backend if backend in REFERENCE_ATTENTION_BACKENDS else AttentionBackend.TILED

    def has_admin_key(self, engine: EngineSpec) -> bool:
        return True

    def admin_endpoints(self, engine: EngineSpec) -> tuple[bool, str, str]:
        return admin_endpoints(engine)  # SGLang's, behind an admin key in every release

    def outputs_fields(self, engine: dict[str, Any]) -> dict[str, Any]:
        # The reference engine reads no numerics.
        return {k: v for k, v in engine.items() if k != "numerics"}

    def command(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> tuple[list[str], list[str]]:
        args = leading_args(spec, deterministic)
        args += ["--device", "cuda" if spec.resources.gpus_per_replica else "cpu"]
        backend = self.effective_backend(spec)
        if deterministic and backend != AttentionBackend.TILED:
            # Tiled is the engine's default: left out, so existing pods' templates stay as they
            # were (the default mode has one attention; the baseline passes none).
            args += ["--attention-backend", backend.flag_value]
        return list(ENGINE_COMMAND), args + seed_args(spec.engine) + trailing_args(spec.engine)

    def environment(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> list[dict[str, Any]]:
        return []

    def probes(self, spec: DeterministicInferenceServiceSpec) -> dict[str, Any]:
        # The reference engine loads in seconds, and its /health never generates.
        return {
            "startupProbe": {
                **http_probe("/health_generate"),
                "periodSeconds": 2,
                "timeoutSeconds": 5,
                "failureThreshold": 60,
            },
            "readinessProbe": {
                **http_probe("/health_generate"),
                "periodSeconds": 5,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            # The reference engine's /model_info answers from its event loop at once.
            "livenessProbe": model_info_liveness(spec, "/model_info", period=5, threshold=3),
        }

    def security_context(self) -> dict[str, Any]:
        return dict(NON_ROOT_CONTAINER)

    def validator_protocol(self, spec: DeterministicInferenceServiceSpec) -> ValidatorProtocol:
        return SGLANG_PROTOCOL  # the reference engine serves SGLang's API too

    def expectations(self, spec: DeterministicInferenceServiceSpec) -> tuple[tuple[str, str], ...]:
        # What /server_info must name: the engine's backend (Tiled, Tree, SplitKV), and its
        # prefix cache, which it never turns off itself.
        out = common_expectations(spec, self.effective_backend(spec), None)
        if spec.engine.radix_cache == Toggle.ENABLED:
            out.append(("--expect-radix-cache", "on"))
        return tuple(out)


SUPPORT = Reference()
