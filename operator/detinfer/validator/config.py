"""What a validation run tests: endpoints, protocol, suites and sampling, checked once."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast
from urllib.parse import urlsplit

from detinfer import validation_defaults
from detinfer.api.spec import FINGERPRINT_PATTERN, Suite
from detinfer.client_key import ClientKey
from detinfer.validator.errors import ConfigError
from detinfer.validator.options import (
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_WAIT_SECONDS,
)
from detinfer.validator.server_facts import Expectations

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$")
_HOST_RE = re.compile(
    r"^[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?)*\.?$"
)


class Protocol(StrEnum):
    """How the validator talks to an engine."""

    SGLANG = "sglang"
    """SGLang's native API: POST /generate (token ids and logprobs), GET /server_info."""
    OPENAI = "openai"
    """POST /v1/completions with seed and logprobs (vLLM, llama.cpp, TGI, TensorRT-LLM, SGLang)."""
    LLAMACPP = "llamacpp"
    """llama.cpp's own POST /completion: token ids (return_tokens) and logprobs (n_probs)."""
    OPENAI_CHAT = "openai-chat"
    """POST /v1/chat/completions with seed, logprobs and top_logprobs (vLLM, llama.cpp,
    Transformers' `transformers serve`, Ollama, OpenAI)."""
    OLLAMA = "ollama"
    """Ollama's POST /api/generate: raw prompt, options.seed, logprobs (token strings)."""
    ANTHROPIC = "anthropic"
    """Anthropic's POST /v1/messages: temperature only (no seed, no logprobs): text."""
    GEMINI = "gemini"
    """Gemini's POST /v1beta/models/MODEL:generateContent: seed, responseLogprobs."""

    @property
    def traits(self) -> Traits:
        return TRAITS[self]


@dataclass(frozen=True)
class Traits:
    """What a protocol can express; the suites and the plan adapt to it."""

    request: str
    """The generation request, as --plan names it."""
    list_batches: bool
    """A batch is one request with a list of prompts. Otherwise it goes out as that many
    requests at once, and the server batches them as it likes (concurrency)."""
    token_id_prompts: bool
    """A prompt can be token ids (RadixCache needs it)."""
    seed: bool
    """A request can carry a sampling seed (the Sampling suite needs it)."""
    unseeded_repeat: bool
    """The engine promises that sampled requests without a seed repeat: SGLang's deterministic
    mode samples them with its default seed 42 (prompts.SGLANG_DEFAULT_SAMPLING_SEED). Other
    engines promise nothing for them: there they are sent, counted and reported, not judged."""
    names_model: bool
    """A request names a model that the validator must be told (--model): hosted APIs serve
    many, and the first listed is no choice."""


TRAITS: dict[Protocol, Traits] = {
    Protocol.SGLANG: Traits("POST /generate", True, True, True, True, False),
    Protocol.OPENAI: Traits("POST /v1/completions", True, False, True, False, False),
    Protocol.LLAMACPP: Traits("POST /completion", True, True, True, False, False),
    Protocol.OPENAI_CHAT: Traits("POST /v1/chat/completions", False, False, True, False, False),
    Protocol.OLLAMA: Traits("POST /api/generate", False, False, True, False, False),
    Protocol.ANTHROPIC: Traits("POST /v1/messages", False, False, False, False, True),
    Protocol.GEMINI: Traits(
        "POST /v1beta/models/MODEL:generateContent", False, False, True, False, True
    ),
}


@dataclass(frozen=True)
class EndpointSpec:
    """One engine to validate: a name (the pod's, for the operator) and its base URL."""

    name: str
    url: str

    @classmethod
    def parse(cls, text: str) -> EndpointSpec:
        """`NAME=URL` (what the operator passes) or a bare URL, then named by its host:port.

        Anything else raises ConfigError naming --endpoint and the value given.
        """
        given = text
        text = text.strip()
        name, sep, rest = text.partition("=")
        if sep and "://" not in name:
            url = rest.strip()
            name = name.strip()
            if not name:
                raise ConfigError(
                    f"--endpoint {given!r}: the name before '=' is empty; give NAME=URL or a "
                    "bare URL"
                )
        else:
            name, url = "", text
        url = url.rstrip("/")

        def refuse(why: str) -> ConfigError:
            return ConfigError(f"--endpoint {given!r}: {why}")

        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError as exc:  # an unclosed IPv6 bracket, for one
            raise refuse(f"is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not hostname:
            if parts.scheme in ("http", "https") and parts.netloc.count(":") > 1:
                raise refuse("an IPv6 address needs brackets: http://[ADDRESS]:PORT")
            raise refuse(
                "the URL must look like http://HOST:PORT (optionally NAME=http://HOST:PORT)"
            )
        if "@" in parts.netloc:
            raise refuse("a user or password in the URL is not supported")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 or parts.netloc.endswith(":"):
            raise refuse("the port must be a number from 1 to 65535")
        if not _is_host(hostname, bracketed=parts.netloc.startswith("[")):
            raise refuse(f"{hostname!r} is not a host name or an IP address")
        if parts.path or parts.query or parts.fragment:
            raise refuse(f"give the server's base URL without a path (got {url!r})")
        if not name:
            host = f"[{hostname}]" if ":" in hostname else hostname
            default_port = 443 if parts.scheme == "https" else 80
            name = f"{host}:{port if port is not None else default_port}"
        elif not _NAME_RE.match(name) or len(name) > 253:
            raise refuse(
                f"the name {name!r} must be a pod name "
                "(letters, digits, '-', '.', '_', at most 253 characters)"
            )
        return cls(name=name, url=url)


def _is_host(host: str, *, bracketed: bool) -> bool:
    """An IP address (IPv6 only in brackets) or a DNS name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return not bracketed and _HOST_RE.match(host) is not None and len(host) <= 253
    return bracketed == (address.version == 6)


def parse_suites(text: str) -> tuple[Suite, ...]:
    """`Single,Mixed,...` (any case), `all` or `none`."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise ConfigError(f"--suites {text!r}: name at least one suite, or 'none' or 'all'")
    if [w.lower() for w in words] == ["none"]:
        return ()
    if [w.lower() for w in words] == ["all"]:
        return tuple(Suite)
    by_name = {s.value.lower(): s for s in Suite}
    chosen: list[Suite] = []
    for word in words:
        suite = by_name.get(word.lower())
        if suite is None:
            raise ConfigError(
                f"--suites: {word!r} is not a suite; choose from "
                f"{', '.join(s.value for s in Suite)}, or 'all' or 'none'"
            )
        if suite not in chosen:
            chosen.append(suite)
    return tuple(chosen)


@dataclass(frozen=True)
class ValidatorConfig:
    """Everything a run needs. Invalid values raise ConfigError when the object is made."""

    endpoints: Sequence[EndpointSpec | str]
    protocol: Protocol = Protocol.SGLANG
    suites: Iterable[Suite | str] = field(default_factory=lambda: tuple(Suite))
    trials: int = validation_defaults.TRIALS
    """Samples per suite: batches (Single, Mixed, Prefix), trials (RadixCache), requests
    (Concurrent)."""
    max_new_tokens: int = validation_defaults.MAX_NEW_TOKENS
    max_batch_size: int | None = None
    """Largest batch of the Single suite; by default 2 * trials + 1 (33 for 16 trials)."""
    sampling_seed: int = validation_defaults.SAMPLING_SEED
    temperature: float = DEFAULT_TEMPERATURE
    expected_fingerprint: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """Bound of the whole run, waiting for the endpoints included."""
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    """How long to wait for GET /health to answer 200 before the suites start."""
    model: str | None = None
    """The model every request names; by default the first of the server's list (GET
    /v1/models, Ollama's /api/tags); the anthropic and gemini protocols need it given."""
    expect: Expectations = field(default_factory=Expectations)
    """What each endpoint's GET /server_info and /model_info must say (--expect-*)."""
    api_key: ClientKey | None = None
    """Sent as a bearer key on every request (DETINFER_API_KEY or --api-key-file)."""
    cache_prompt: bool | None = None
    """llama.cpp's `cache_prompt` on every request (--cache-prompt); None: the llamacpp
    protocol sends true, llama-server's own default, and other protocols send nothing."""
    vllm_token_ids: bool = False
    """vLLM's `return_tokens_as_token_ids` on every request of the openai protocols
    (--vllm-token-ids): its logprobs then name each token `token_id:<id>`, which are compared
    as ids. Off by default: other servers (OpenAI's own) refuse an unknown field."""
    stop_at_first_failure: bool = False
    """End an endpoint's suites at the first that finds outputs differ (--stop-at-first-failure)."""

    def __post_init__(self) -> None:
        endpoints = tuple(
            e if isinstance(e, EndpointSpec) else EndpointSpec.parse(e) for e in self.endpoints
        )
        if not endpoints:
            raise ConfigError("--endpoint: give at least one endpoint to validate")
        names = [e.name for e in endpoints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"--endpoint: the name {duplicates[0]!r} is given twice; each endpoint needs "
                "its own name (NAME=URL)"
            )
        suites = []
        for item in self.suites:
            for suite in (item,) if isinstance(item, Suite) else parse_suites(item):
                if suite not in suites:
                    suites.append(suite)
        object.__setattr__(self, "endpoints", endpoints)
        object.__setattr__(self, "suites", tuple(suites))
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        _at_least("--trials", self.trials, 1)
        _at_least("--max-new-tokens", self.max_new_tokens, 1)
        if self.max_batch_size is not None:
            _at_least("--max-batch-size", self.max_batch_size, 1)
        _at_least("--sampling-seed", self.sampling_seed, 0)
        if not 0 <= self.temperature <= 100:
            raise ConfigError(f"--temperature must be from 0 to 100, got {self.temperature!r}")
        for option, value in (
            ("--timeout-seconds", self.timeout_seconds),
            ("--request-timeout-seconds", self.request_timeout_seconds),
            ("--wait-seconds", self.wait_seconds),
        ):
            if not value > 0:
                raise ConfigError(f"{option} must be more than 0, got {value!r}")
        if self.expected_fingerprint is not None and not re.match(
            FINGERPRINT_PATTERN, self.expected_fingerprint
        ):
            raise ConfigError(
                f"--expected-fingerprint {self.expected_fingerprint!r} is not sha256:<64 hex>"
            )

        _check_expectations(self.expect, self.protocol)
        if self.protocol.traits.names_model and not (self.model or "").strip():
            raise ConfigError(
                f"--model: the {self.protocol.value} protocol needs the model's name (a hosted "
                "API serves many; the validator does not pick one)"
            )
        if self.vllm_token_ids and self.protocol not in (Protocol.OPENAI, Protocol.OPENAI_CHAT):
            raise ConfigError(
                "--vllm-token-ids: only the openai and openai-chat protocols send vLLM's "
                f"return_tokens_as_token_ids; --protocol is {self.protocol.value}"
            )
        if self.cache_prompt is not None and self.protocol != Protocol.LLAMACPP:
            raise ConfigError(
                "--cache-prompt: only the llamacpp protocol sends cache_prompt; "
                f"--protocol is {self.protocol.value}"
            )

    @property
    def sends_cache_prompt(self) -> bool | None:
        """The `cache_prompt` every llamacpp request carries; None for other protocols."""
        if self.protocol != Protocol.LLAMACPP:
            return None
        return True if self.cache_prompt is None else self.cache_prompt

    @property
    def batch_size_bound(self) -> int:
        return self.max_batch_size or 2 * self.trials + 1

    # __post_init__ turns what callers give (strings or parsed values) into the parsed
    # values; these say so to the type checker.
    @property
    def endpoint_specs(self) -> tuple[EndpointSpec, ...]:
        return cast(tuple[EndpointSpec, ...], self.endpoints)

    @property
    def suite_list(self) -> tuple[Suite, ...]:
        return cast(tuple[Suite, ...], self.suites)

    def options(self) -> dict[str, object]:
        """The options as the report records them."""
        return {
            "protocol": self.protocol.value,
            "suites": [s.value for s in self.suite_list],
            "trials": self.trials,
            "maxNewTokens": self.max_new_tokens,
            "maxBatchSize": self.batch_size_bound,
            "samplingSeed": self.sampling_seed,
            "temperature": self.temperature,
            "expectedFingerprint": self.expected_fingerprint,
            "timeoutSeconds": self.timeout_seconds,
            "requestTimeoutSeconds": self.request_timeout_seconds,
            "waitSeconds": self.wait_seconds,
            "model": self.model,
            "cachePrompt": self.sends_cache_prompt,
            "vllmTokenIds": self.vllm_token_ids,
            "stopAtFirstFailure": self.stop_at_first_failure,
            # Where the key came from, never the key.
            "clientKey": self.api_key.source if self.api_key else None,
            **self.expect.options(),
        }


_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_BACKEND_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")


def _check_expectations(expect: Expectations, protocol: Protocol) -> None:
    if expect.given and protocol != Protocol.SGLANG:
        raise ConfigError(
            "--expect-*: only the sglang protocol reads GET /server_info and /model_info; "
            f"--protocol is {protocol.value}"
        )
    if expect.version is not None and not _VERSION_RE.match(expect.version):
        raise ConfigError(f"--expect-version {expect.version!r} is not a version like 0.5.23")
    if expect.attention_backend is not None and not _BACKEND_RE.match(expect.attention_backend):
        raise ConfigError(
            f"--expect-attention-backend {expect.attention_backend!r} is not an SGLang "
            "--attention-backend value (lower case, like fa3)"
        )
    for option, value in (
        ("--expect-model-path", expect.model_path),
        ("--expect-weight-version", expect.weight_version),
    ):
        if value is not None and not value.strip():
            raise ConfigError(f"{option} {value!r}: give the value /model_info must report")
    if expect.tensor_parallel_size is not None:
        _at_least("--expect-tensor-parallel-size", expect.tensor_parallel_size, 1)


def _at_least(option: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{option} must be a whole number of at least {low}, got {value!r}")
