"""What the operator renders for `engine.kind: LlamaCpp` (detinfer.engines.kinds).

llama.cpp's `llama-server` as the guides recommend for reproducible outputs, every setting from
the spec: the GGUF file at model.path, checked against model.sha256 before the server starts
(builders/process_line.GGUF_CHECK); --seed; --temp 0 and --top-k 1 (greedy, the defaults of
requests that set neither); --parallel from engine.slots (1 when unset: llama.cpp issue 7052
reports other texts at temperature 0 with several slots, and the validator measures it); the
prompt cache as engine.radixCache says (--cache-prompt, --no-cache-prompt: a cached prefix
changes logprobs, docs/engines.md); --metrics; no web UI; every layer on the GPU when the pod
has GPUs (--n-gpu-layers 999), else the CPU.

llama-server also reads LLAMA_ARG_* environment variables for flags the command line does not
give (common/arg.cpp: the command line wins), so every flag that matters is on the command line.
The overhead baseline (deterministic False) runs the server's own defaults: as many slots as it
picks (--parallel -1) and the prompt cache on.

The validator speaks llama.cpp's native protocol (/completion, /props); /health answers 503
while the model loads and 200 once it serves, without generating.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from detinfer.api import constants as c
from detinfer.api.base import Toggle
from detinfer.api.spec import AttentionBackend, DeterministicInferenceServiceSpec, EngineSpec
from detinfer.builders.common import NON_ROOT_CONTAINER, http_probe
from detinfer.builders.process_line import GGUF_CHECK, HOST_FLAG, LLAMA_SERVER_COMMAND
from detinfer.engines.kinds import NO_ADMIN_ENDPOINTS, ValidatorProtocol

# Startup: the model is on the volume (or in the image) already; loading a 70B GGUF from a
# network volume at 200 MB/s takes about 4 minutes: 30 minutes leaves room.
STARTUP_SECONDS = 1800
ALL_LAYERS = "999"


class LlamaCpp:
    app_name = "llama-server"

    def extra_args_errors(
        self, spec: DeterministicInferenceServiceSpec
    ) -> Iterator[tuple[int, str]]:
        # The CRD refuses every item (no flag table of llama-server yet); nothing more to check.
        return iter(())

    def auto_candidates(
        self, spec: DeterministicInferenceServiceSpec
    ) -> tuple[AttentionBackend, ...]:
        return ()  # Auto is refused with kind LlamaCpp (the CRD)

    def effective_backend(self, spec: DeterministicInferenceServiceSpec) -> AttentionBackend:
        return spec.engine.attention_backend  # not passed: llama-server picks its kernels

    def has_admin_key(self, engine: EngineSpec) -> bool:
        return False  # llama-server has one --api-key (and no admin endpoints the chart turns on)

    def admin_endpoints(self, engine: EngineSpec) -> tuple[bool, str, str]:
        # llama-server's endpoints that change a running server: POST /props (only with
        # --props), slot save and restore (only with --slot-save-path), LoRA adapter scales (only
        # adapters loaded with --lora), models loaded and unloaded (router mode only): none of
        # them is on as the operator renders it, and extraArgs cannot turn one on.
        return (
            True,
            NO_ADMIN_ENDPOINTS,
            "llama-server as rendered has no endpoint that changes its weights or settings "
            "(no --props, --slot-save-path, --lora or router mode; extraArgs are refused)",
        )

    def outputs_fields(self, engine: dict[str, Any]) -> dict[str, Any]:
        # SGLang's numerics and CUDA graphs mean nothing to llama-server.
        return {k: v for k, v in engine.items() if k not in ("numerics", "cudaGraph")}

    def command(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> tuple[list[str], list[str]]:
        engine = spec.engine
        sha256 = spec.model.sha256 or ""  # required by the CRD with this kind
        args = [sha256, spec.model.path, *LLAMA_SERVER_COMMAND]
        args += ["--model", spec.model.path, HOST_FLAG, "0.0.0.0", "--port", str(c.ENGINE_PORT)]
        args += ["--seed", str(engine.sampling_seed), "--temp", "0", "--top-k", "1"]
        if deterministic:
            args += ["--parallel", str(engine.slots or 1)]
            cache = engine.radix_cache == Toggle.ENABLED
            args.append("--cache-prompt" if cache else "--no-cache-prompt")
        if spec.resources.gpus_per_replica:
            args += ["--n-gpu-layers", ALL_LAYERS]
        args += ["--metrics", "--no-webui"]
        return list(GGUF_CHECK), args + list(engine.extra_args)

    def environment(
        self, spec: DeterministicInferenceServiceSpec, deterministic: bool
    ) -> list[dict[str, Any]]:
        return []

    def probes(self, spec: DeterministicInferenceServiceSpec) -> dict[str, Any]:
        return {
            "startupProbe": {
                **http_probe("/health"),
                "periodSeconds": 5,
                "timeoutSeconds": 5,
                "failureThreshold": STARTUP_SECONDS // 5,
            },
            "readinessProbe": {
                **http_probe("/health"),
                "periodSeconds": 10,
                "timeoutSeconds": 5,
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
        # llama-server writes nothing but /tmp (an emptyDir) and needs no privilege.
        return dict(NON_ROOT_CONTAINER)

    def validator_protocol(self, spec: DeterministicInferenceServiceSpec) -> ValidatorProtocol:
        """llama.cpp's native protocol, with the cache_prompt engine.radixCache says on every
        request: --no-cache-prompt only sets the default of requests that send none (tools/server:
        a request's cache_prompt wins), so the validator sends the setting the spec promises, and
        clients must not send cache_prompt true to a Disabled one (docs/clients.md)."""
        cache = "on" if spec.engine.radix_cache == Toggle.ENABLED else "off"
        return ValidatorProtocol("llamacpp", cache_prompt=cache)

    def expectations(self, spec: DeterministicInferenceServiceSpec) -> tuple[tuple[str, str], ...]:
        return ()  # the --expect-* flags read SGLang's /server_info; /props is recorded


SUPPORT = LlamaCpp()
