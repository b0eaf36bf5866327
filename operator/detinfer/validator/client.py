"""Talking to one engine over HTTP: SGLang's /generate, OpenAI's /v1/completions or llama.cpp's
/completion (the protocols that take a list of prompts; detinfer.validator.chat has those that
take one).

Every answer is checked against the protocol before anything compares it: a wrong number of
outputs, logprobs that do not match the tokens, too many tokens, or a body that is not JSON
raise ProtocolError, and a transport failure or any answer but 2xx (a redirect included: none
is followed) raises CouldNotTest; a 401 or 403 says whether a client key was sent. Either ends the run with "could not test", never with a
determinism verdict. An output that is well-formed but shorter than asked, where the request
could not stop early, is marked `cut_short` for the suites to judge.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx

from detinfer.client_key import ClientKey, refusal
from detinfer.validator.compare import Basis, Output, Prompt
from detinfer.validator.config import EndpointSpec, Protocol, ValidatorConfig
from detinfer.validator.errors import CouldNotTest, ProtocolError
from detinfer.validator.server_facts import (
    MODEL_INFO_PATHS,
    PROPS_PATHS,
    SERVER_INFO_PATHS,
    kept,
)

HEALTH_PROBE_SECONDS = 5.0
_SNIPPET = 160


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters of a request."""

    max_new_tokens: int
    temperature: float
    seed: int | None
    """None: the request sends no seed, and the server samples with its own default."""
    top_p: float = 1.0
    """Sent only when below 1 (1 is every server's default)."""

    @property
    def key(self) -> tuple:
        return (self.max_new_tokens, self.temperature, self.seed, self.top_p)


class EngineClient:
    """One endpoint; counts requests, tokens and latencies as it goes."""

    protocol: Protocol
    asks_ignore_eos = False
    """Whether requests carry ignore_eos, so that an output shorter than asked is a violation."""
    gives_prompt_logprobs = False
    """Whether a request can ask for the logprobs of prompt positions (RadixCache compares them)."""
    cached_tokens_field = ""
    """Where an answer says how many prompt tokens came from the cache (RadixCache's notes)."""

    def __init__(self, endpoint: EndpointSpec, config: ValidatorConfig) -> None:
        self.name = endpoint.name
        self.url = endpoint.url
        self.config = config
        self.request_timeout = config.request_timeout_seconds
        self.key_sent = config.api_key is not None
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            headers=self.headers(config.api_key),
            timeout=httpx.Timeout(config.request_timeout_seconds),
            limits=httpx.Limits(max_connections=max(32, 2 * config.trials)),
            trust_env=False,  # pod-to-pod traffic never goes through a proxy
            # An answer from elsewhere is not the engine's answer: a redirect is an error.
            follow_redirects=False,
        )
        self.requests = 0
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.latencies: list[float] = []
        self._basis: Basis | None = None
        self._with_logprobs: bool | None = None
        self.served_by: Counter[str] = Counter()
        """What the answers say served them (OpenAI's system_fingerprint, Gemini's
        modelVersion, Anthropic's model), and how many answers said each: more than one is a
        change of backend between samples, which the report names."""

    @staticmethod
    def headers(key: ClientKey | None) -> dict[str, str]:
        """What every request carries: the client key as a bearer token."""
        return key.headers() if key else {}

    def _served_by(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.served_by[value] += 1

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    # --- readiness and information -------------------------------------------------------------

    async def wait_ready(self, wait_seconds: float) -> None:
        """Poll GET /health until it answers 200; connection errors are retried with backoff."""
        deadline = time.monotonic() + wait_seconds
        delay, last = 0.1, "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = await self._http.get(
                    "/health", timeout=max(0.05, min(HEALTH_PROBE_SECONDS, remaining))
                )
                if response.status_code == 200:
                    return
                self._raise_if_refused("GET", "/health", response)
                if response.status_code == 404 and await self._ready_without_health():
                    return
                last = f"GET /health answered HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = self._transport_error("GET", "/health", exc)
            if time.monotonic() + delay > deadline:
                raise CouldNotTest(f"{self.name}: not ready after {wait_seconds:g} s: {last}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _ready_without_health(self) -> bool:
        return False

    async def _ready_at(self, path: str) -> bool:
        """Ready without /health: `path` answers 200 (a refusal ends the wait)."""
        try:
            response = await self._http.get(path, timeout=HEALTH_PROBE_SECONDS)
        except httpx.HTTPError:
            return False
        self._raise_if_refused("GET", path, response)
        return response.status_code == 200

    async def server_info(self) -> dict[str, Any]:
        """What the server says about itself, its named fields only (server_facts.KEPT_FIELDS);
        best effort: errors are recorded, not raised, but for a refusal (401, 403)."""
        return {}

    async def model_info(self) -> dict[str, Any] | None:
        """/model_info's named fields, or {"error": why not}; None where the protocol has none."""
        return None

    async def _get_info(self, *paths: str) -> tuple[Any, str | None]:
        """(the answer, None) of the first of `paths` that does not answer 404 (a newer name,
        then its old one), or (None, why not). Never a snippet of the body: an info answer may
        hold secrets."""
        path, tried = paths[0], []
        for path in paths:
            try:
                response = await self._http.get(path)
            except httpx.HTTPError as exc:
                return None, self._transport_error("GET", path, exc)
            if response.status_code != 404:
                break
            tried.append(f"GET {path} answered HTTP 404")
        else:
            return None, ", ".join(tried)
        self._raise_if_refused("GET", path, response)
        if response.status_code != 200:
            return None, f"GET {path} answered HTTP {response.status_code}"
        try:
            return response.json(), None
        except ValueError:
            return None, f"GET {path} answered invalid JSON ({len(response.content)} bytes)"

    async def _read_kept(self, paths: tuple[str, ...]) -> dict[str, Any]:
        """The named fields of the answer to `paths`, or {"error": why not}."""
        answer, error = await self._get_info(*paths)
        return {"error": error} if error is not None else kept(answer, paths[0])

    def _raise_if_refused(self, method: str, path: str, response: httpx.Response) -> None:
        """A 401 or 403: the server wants another key, which no retry will bring."""
        why = refusal(f"{method} {path}", response.status_code, self.key_sent)
        if why is not None:
            raise CouldNotTest(f"{self.name}: {why}")

    # --- generation -----------------------------------------------------------------------------

    async def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: Sampling,
        *,
        logprob_start_len: int | None = None,
    ) -> list[Output]:
        """One batched request (a JSON list of prompts); one output per prompt, in order."""
        raise NotImplementedError

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        """One request with a single prompt (not a list)."""
        raise NotImplementedError

    # --- helpers --------------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise CouldNotTest(f"{self.name}: {self._transport_error('POST', path, exc)}") from None
        self.latencies.append(time.perf_counter() - started)
        self.requests += 1
        self._raise_if_refused("POST", path, response)
        if not 200 <= response.status_code < 300:
            raise CouldNotTest(
                f"{self.name}: POST {path} answered HTTP {response.status_code}"
                f"{_redirect(response)}: {_snippet(response.text)}"
            )
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(
                f"{self.name}: POST {path} answered invalid JSON ({exc}): "
                f"{_snippet(response.content.decode(errors='replace'))}"
            ) from None

    def _transport_error(self, method: str, path: str, exc: httpx.HTTPError) -> str:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            if isinstance(exc, httpx.ConnectTimeout):
                return f"cannot connect to {self.url}: timed out"
            return f"{method} {path} timed out after {self.request_timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {self.url}: {detail}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"{method} {path}: the response was cut off or malformed ({detail})"
        return f"{method} {path} failed: {type(exc).__name__}: {detail}"

    def _outputs(self, data: Any, where: str, n: int) -> list[Any]:
        """A batch's answer: a list of `n` outputs, or a ProtocolError saying what came instead."""
        if isinstance(data, dict) and "error" in data:
            raise self._bad(where, f"answered an error: {_snippet(json.dumps(data['error']))}")
        if not isinstance(data, list):
            raise self._bad(where, f"answered {_kind(data)}, not a list of {n} outputs")
        if len(data) != n:
            raise self._bad(where, f"answered {len(data)} outputs for {n} prompts")
        return data

    def _bad(self, where: str, what: str) -> ProtocolError:
        return ProtocolError(f"{self.name}: {where} {what}")

    def _check_shape(self, where: str, basis: Basis, with_logprobs: bool) -> None:
        """Outputs of one server must all be comparable: the same basis, logprobs or none."""
        if self._basis is None:
            self._basis, self._with_logprobs = basis, with_logprobs
            return
        if basis != self._basis:
            raise self._bad(
                where, f"gave {basis.value} where earlier outputs gave {self._basis.value}"
            )
        if with_logprobs != self._with_logprobs:
            raise self._bad(
                where,
                "gave no logprobs where earlier outputs had them"
                if self._with_logprobs
                else "gave logprobs where earlier outputs had none",
            )

    @property
    def accepts_token_ids(self) -> bool:
        return self.protocol.traits.token_id_prompts

    @property
    def basis(self) -> Basis | None:
        """What the outputs were compared on (known after the first answer)."""
        return self._basis

    @property
    def with_logprobs(self) -> bool | None:
        return self._with_logprobs


class SGLangClient(EngineClient):
    """SGLang's native API: POST /generate, GET /model_info, /server_info (or their old names,
    /get_model_info and /get_server_info, where a server answers 404)."""

    protocol = Protocol.SGLANG
    asks_ignore_eos = True
    gives_prompt_logprobs = True
    cached_tokens_field = "meta_info.cached_tokens"

    async def server_info(self) -> dict[str, Any]:
        return {
            "modelInfo": await self.model_info(),
            "serverInfo": await self._read_kept(SERVER_INFO_PATHS),
        }

    async def model_info(self) -> dict[str, Any]:
        return await self._read_kept(MODEL_INFO_PATHS)

    @staticmethod
    def body(
        prompt: Prompt | list[Prompt], sampling: Sampling, logprob_start_len: int | None
    ) -> dict[str, Any]:
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if all(isinstance(p, str) for p in prompts):
            field = "text"
        elif all(isinstance(p, tuple) for p in prompts):
            field = "input_ids"
        else:
            raise ValueError("a batch mixes text and token-id prompts")
        value: Any = (
            [p if isinstance(p, str) else list(p) for p in prompt]
            if isinstance(prompt, list)
            else (prompt if isinstance(prompt, str) else list(prompt))
        )
        params: dict[str, Any] = {
            "temperature": sampling.temperature,
            "max_new_tokens": sampling.max_new_tokens,
            "ignore_eos": True,
        }
        if sampling.seed is not None:
            params["sampling_seed"] = sampling.seed
        if sampling.top_p < 1.0:
            params["top_p"] = sampling.top_p
        body: dict[str, Any] = {field: value, "sampling_params": params, "return_logprob": True}
        if logprob_start_len is not None:
            body["logprob_start_len"] = logprob_start_len
        return body

    async def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: Sampling,
        *,
        logprob_start_len: int | None = None,
    ) -> list[Output]:
        data = await self._post("/generate", self.body(list(prompts), sampling, logprob_start_len))
        where = f"POST /generate (a batch of {len(prompts)})"
        return [
            self._parse(item, f"{where}: output {i + 1}", sampling, logprob_start_len)
            for i, item in enumerate(self._outputs(data, where, len(prompts)))
        ]

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        data = await self._post("/generate", self.body(prompt, sampling, None))
        return self._parse(data, "POST /generate", sampling, None)

    def _parse(
        self, item: Any, where: str, sampling: Sampling, logprob_start_len: int | None
    ) -> Output:
        if not isinstance(item, dict):
            raise self._bad(where, f"is {_kind(item)}, not a JSON object")
        if "error" in item and "meta_info" not in item:
            raise self._bad(where, f"is an error: {_snippet(json.dumps(item['error']))}")
        meta = item.get("meta_info")
        if not isinstance(meta, dict):
            raise self._bad(where, "has no meta_info object")
        text = item.get("text", "")
        if not isinstance(text, str):
            raise self._bad(where, f"has a text that is {_kind(text)}, not a string")

        ids: tuple[int, ...] | None = None
        raw_ids = item.get("output_ids")
        if raw_ids is not None:
            if not isinstance(raw_ids, list) or not all(_is_int(t) for t in raw_ids):
                raise self._bad(where, "has output_ids that are not a list of integers")
            ids = tuple(raw_ids)
        logprobs: tuple[float, ...] | None = None
        raw_logprobs = meta.get("output_token_logprobs")
        if raw_logprobs is not None:
            # A null logprob (how orjson writes NaN) is parsed, then judged as no evidence.
            entries = _logprob_entries(raw_logprobs, allow_null=True)
            if entries is None:
                raise self._bad(
                    where, "has meta_info.output_token_logprobs that are not [logprob, id, ...]"
                )
            logprobs = tuple(lp for lp, _ in entries)  # type: ignore[misc]
            logprob_ids = tuple(tid for _, tid in entries)
            if ids is None:
                # Some SGLang versions leave output_ids out; the logprobs carry the ids.
                ids = logprob_ids
            elif len(logprob_ids) != len(ids):
                raise self._bad(
                    where,
                    f"has {len(logprob_ids)} output_token_logprobs for {len(ids)} output_ids",
                )
            elif logprob_ids != ids:
                k = next(i for i, (a, b) in enumerate(zip(ids, logprob_ids, strict=True)) if a != b)
                raise self._bad(
                    where,
                    f"has output_ids and output_token_logprobs that disagree at token {k} "
                    f"({ids[k]} vs {logprob_ids[k]})",
                )
        if ids is None:
            raise self._bad(where, "has neither output_ids nor meta_info.output_token_logprobs")
        self._check_shape(where, Basis.TOKEN_IDS, logprobs is not None)

        finish = _finish_reason(meta.get("finish_reason"))
        cut_short = _check_length(self, where, len(ids), finish, sampling.max_new_tokens)

        inputs = None
        if logprob_start_len is not None:
            raw_inputs = meta.get("input_token_logprobs")
            entries = (
                _logprob_entries(raw_inputs, allow_null=True) if raw_inputs is not None else None
            )
            if entries is None:
                raise self._bad(
                    where, "has no meta_info.input_token_logprobs list of [logprob, id, ...]"
                )
            inputs = tuple(entries)
        completion = meta.get("completion_tokens")
        completion = completion if _is_int(completion) else len(ids)
        prompt_tokens = meta.get("prompt_tokens")
        prompt_tokens = prompt_tokens if _is_int(prompt_tokens) else 0
        cached = meta.get("cached_tokens")
        self.generated_tokens += completion
        self.prompt_tokens += prompt_tokens
        return Output(
            text=text,
            tokens=ids,
            logprobs=logprobs,
            input_logprobs=inputs,
            logprob_start=logprob_start_len or 0,
            finish_reason=finish,
            completion_tokens=completion,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached if _is_int(cached) else None,
            basis=Basis.TOKEN_IDS,
            cut_short=cut_short,
        )


class OpenAIClient(EngineClient):
    """POST /v1/completions with seed and logprobs; no token ids, no server information."""

    protocol = Protocol.OPENAI

    def __init__(self, endpoint: EndpointSpec, config: ValidatorConfig) -> None:
        super().__init__(endpoint, config)
        self.model = config.model

    async def _ready_without_health(self) -> bool:
        # Not every OpenAI-style server has /health; one that lists its models is up.
        return await self._ready_at("/v1/models")

    async def server_info(self) -> dict[str, Any]:
        """The model name: given (--model) or the first of GET /v1/models; nothing else."""
        if self.model is None:
            models, error = await self._get_info("/v1/models")
            data = models.get("data") if isinstance(models, dict) else None
            first = data[0] if isinstance(data, list) and data else None
            if not isinstance(first, dict) or not isinstance(first.get("id"), str):
                raise CouldNotTest(
                    f"{self.name}: cannot tell the model name from GET /v1/models "
                    f"({error or _snippet(json.dumps(models))}); pass --model"
                )
            self.model = first["id"]
        return {"model": self.model}

    @staticmethod
    def body(
        prompt: str | list[str], sampling: Sampling, model: str | None, token_ids: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model or "default",
            "prompt": prompt,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "logprobs": 1,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        if token_ids:
            body["return_tokens_as_token_ids"] = True
        return body

    def _ids_of(
        self, tokens: tuple[int, ...] | tuple[str, ...], where: str
    ) -> tuple[int, ...] | tuple[str, ...]:
        """With --vllm-token-ids, the ids in vLLM's `token_id:<id>` token names."""
        if not self.config.vllm_token_ids or _are_ids(tokens):
            return tokens
        ids = [VLLM_TOKEN_ID.fullmatch(t) for t in tokens if isinstance(t, str)]
        if len(ids) != len(tokens) or not all(ids):
            bad = next((t for t, m in zip(tokens, ids, strict=False) if not m), tokens[-1])
            raise self._bad(
                where,
                f"has a token {_snippet(repr(bad))} that is not token_id:<id> although "
                "return_tokens_as_token_ids was asked (--vllm-token-ids)",
            )
        return tuple(int(m.group(1)) for m in ids if m)

    async def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: Sampling,
        *,
        logprob_start_len: int | None = None,
    ) -> list[Output]:
        texts = [_text_prompt(p) for p in prompts]
        body = self.body(texts, sampling, self.model, self.config.vllm_token_ids)
        data = await self._post("/v1/completions", body)
        where = f"POST /v1/completions (a batch of {len(prompts)})"
        choices = self._choices(data, where, len(prompts))
        outputs = [
            self._parse(choice, f"{where}: choice {i}", sampling)
            for i, choice in enumerate(choices)
        ]
        self._count_usage(data, outputs)
        return outputs

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        data = await self._post(
            "/v1/completions",
            self.body(_text_prompt(prompt), sampling, self.model, self.config.vllm_token_ids),
        )
        where = "POST /v1/completions"
        output = self._parse(self._choices(data, where, 1)[0], f"{where}: choice 0", sampling)
        self._count_usage(data, [output])
        return output

    def _choices(self, data: Any, where: str, n: int) -> list[dict[str, Any]]:
        if isinstance(data, dict) and "error" in data and "choices" not in data:
            raise self._bad(where, f"answered an error: {_snippet(json.dumps(data['error']))}")
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise self._bad(where, f"answered {_kind(data)} without a choices list")
        choices = data["choices"]
        if len(choices) != n:
            raise self._bad(where, f"answered {len(choices)} choices for {n} prompts")
        if not all(isinstance(c, dict) and _is_int(c.get("index", 0)) for c in choices):
            raise self._bad(where, "has a choice that is not an object with an integer index")
        ordered = sorted(choices, key=lambda c: c.get("index", 0))
        if [c.get("index", i) for i, c in enumerate(ordered)] != list(range(n)):
            raise self._bad(where, f"has choice indexes that are not 0 to {n - 1}")
        return ordered

    def _parse(self, choice: dict[str, Any], where: str, sampling: Sampling) -> Output:
        text = choice.get("text")
        if not isinstance(text, str):
            raise self._bad(where, "has no text string")
        finish = choice.get("finish_reason")
        finish = finish if isinstance(finish, str) else None
        raw = choice.get("logprobs")
        tokens: tuple[int, ...] | tuple[str, ...] | None = None
        logprobs: tuple[float | None, ...] | None = None
        basis, unlisted = Basis.TEXT, 0
        if raw is not None:
            if not isinstance(raw, dict):
                raise self._bad(where, f"has logprobs that are {_kind(raw)}, not an object")
            if "content" in raw:
                tokens, logprobs, strings = self._chat_logprobs(raw["content"], where)
                tokens = self._ids_of(tokens, where)
                basis = Basis.TOKEN_IDS if _are_ids(tokens) else Basis.TOKENS
                unlisted = _unlisted(strings, text, finish, sampling.max_new_tokens)
            else:
                tokens, logprobs = self._legacy_logprobs(raw, where)
                # Strings, unless --vllm-token-ids asked for (and _ids_of checked) ids; an empty
                # list is not ids either.
                ids = tokens is not None and self.config.vllm_token_ids
                tokens = None if tokens is None else self._ids_of(tokens, where)
                basis = Basis.TEXT if tokens is None else Basis.TOKEN_IDS if ids else Basis.TOKENS
        self._check_shape(where, basis, logprobs is not None)
        cut_short = None
        if tokens is not None:
            n = len(tokens) + unlisted
            cut_short = _check_length(self, where, n, finish, sampling.max_new_tokens)
        return Output(
            text=text,
            tokens=tokens,
            logprobs=logprobs,
            finish_reason=finish,
            completion_tokens=len(tokens) + unlisted if tokens is not None else 0,
            basis=basis,
            unlisted_tokens=unlisted,
            cut_short=cut_short,
        )

    def _legacy_logprobs(
        self, raw: dict[str, Any], where: str
    ) -> tuple[tuple[str, ...] | None, tuple[float | None, ...] | None]:
        """The completions shape: `tokens` (strings) and `token_logprobs`."""
        raw_tokens = raw.get("tokens")
        if raw_tokens is None:
            return None, None
        if not isinstance(raw_tokens, list) or not all(isinstance(t, str) for t in raw_tokens):
            raise self._bad(where, "has logprobs.tokens that are not a list of strings")
        raw_values = raw.get("token_logprobs")
        if raw_values is None:
            return tuple(raw_tokens), None
        if not isinstance(raw_values, list) or not all(
            v is None or _is_number(v) for v in raw_values
        ):
            raise self._bad(where, "has logprobs.token_logprobs that are not numbers")
        if len(raw_values) != len(raw_tokens):
            raise self._bad(
                where, f"has {len(raw_values)} token_logprobs for {len(raw_tokens)} tokens"
            )
        return tuple(raw_tokens), tuple(_logprob(v) for v in raw_values)

    def _chat_logprobs(
        self, content: Any, where: str
    ) -> tuple[tuple[int, ...] | tuple[str, ...], tuple[float | None, ...], tuple[str, ...]]:
        """The chat shape, which llama-server's /v1/completions answers too:
        `content: [{"id", "token", "logprob", ...}]`; ids where every entry has one, the
        logprobs, and the entries' token strings."""
        entries = _token_entries(content)
        if entries is None:
            raise self._bad(
                where,
                "has logprobs.content that is not a list of objects with a token string or an "
                "integer id, and a logprob",
            )
        ids, strings, values = entries
        return (ids if ids is not None else strings), values, strings

    def _count_usage(self, data: dict[str, Any], outputs: list[Output]) -> None:
        self._served_by(data.get("system_fingerprint"))
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        completion = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        self.generated_tokens += (
            completion if _is_int(completion) else sum(o.completion_tokens for o in outputs)
        )
        self.prompt_tokens += prompt if _is_int(prompt) else 0


class LlamaCppClient(EngineClient):
    """llama.cpp's own API (tools/server): POST /completion, GET /props.

    A request asks for the generated ids (`return_tokens`) and the logprob of each (`n_probs`
    1: `completion_probabilities`, computed from the logits before sampling), with
    `ignore_eos` and no stop strings, so every sample has as many tokens as asked. A list of
    prompts is one request that llama-server turns into one task per prompt and spreads over
    its slots (`--parallel`): with several slots they decode together, in one batch."""

    protocol = Protocol.LLAMACPP
    asks_ignore_eos = True
    cached_tokens_field = "timings.cache_n"

    async def server_info(self) -> dict[str, Any]:
        return {"props": await self._read_kept(PROPS_PATHS)}

    @staticmethod
    def body(
        prompt: Prompt | list[Prompt], sampling: Sampling, cache_prompt: bool
    ) -> dict[str, Any]:
        """A token-id prompt is a list of ints and several prompts a list of those or of
        strings: never mixed, which llama.cpp would read as one prompt of text and ids."""
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if len({isinstance(p, str) for p in prompts}) > 1:
            raise ValueError("a batch mixes text and token-id prompts")
        value: Any = (
            [p if isinstance(p, str) else list(p) for p in prompt]
            if isinstance(prompt, list)
            else (prompt if isinstance(prompt, str) else list(prompt))
        )
        greedy = sampling.temperature == 0
        body: dict[str, Any] = {
            "prompt": value,
            "n_predict": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            # Greedy: the one candidate the guides recommend. Sampling: no top-k and no min-p
            # (llama-server's defaults are 40 and 0.05, and --top-k 1 on its command line
            # would make every sample greedy), so that top_p alone shapes it, as elsewhere.
            "top_k": 1 if greedy else 0,
            "min_p": 0.0,
            "ignore_eos": True,
            "cache_prompt": cache_prompt,
            "return_tokens": True,
            "n_probs": 1,
            "stream": False,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        return body

    @property
    def _cache_prompt(self) -> bool:
        return bool(self.config.sends_cache_prompt)

    async def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: Sampling,
        *,
        logprob_start_len: int | None = None,
    ) -> list[Output]:
        # llama.cpp gives no prompt logprobs; RadixCache compares the outputs alone here.
        data = await self._post(
            "/completion", self.body(list(prompts), sampling, self._cache_prompt)
        )
        where = f"POST /completion (a batch of {len(prompts)})"
        if len(prompts) == 1 and isinstance(data, dict) and "error" not in data:
            data = [data]  # one prompt in a list is answered as one object, not a list of one
        return [
            self._parse(item, f"{where}: output {i + 1}", sampling, i)
            for i, item in enumerate(self._outputs(data, where, len(prompts)))
        ]

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        data = await self._post("/completion", self.body(prompt, sampling, self._cache_prompt))
        return self._parse(data, "POST /completion", sampling, 0)

    def _parse(self, item: Any, where: str, sampling: Sampling, index: int) -> Output:
        if not isinstance(item, dict):
            raise self._bad(where, f"is {_kind(item)}, not a JSON object")
        if "error" in item:
            raise self._bad(where, f"is an error: {_snippet(json.dumps(item['error']))}")
        if item.get("index", index) != index:
            raise self._bad(where, f"has index {item.get('index')!r} where {index} was due")
        if item.get("truncated") is True:
            raise self._bad(where, "says the server truncated the prompt to fit its context")
        text = item.get("content", "")
        if not isinstance(text, str):
            raise self._bad(where, f"has a content that is {_kind(text)}, not a string")
        ids = item.get("tokens")
        if not isinstance(ids, list) or not all(_is_int(t) for t in ids):
            raise self._bad(where, "has no tokens list of integers (return_tokens was asked)")
        entries = _token_entries(item.get("completion_probabilities"))
        logprob_ids = entries[0] if entries is not None else None
        if entries is None or logprob_ids is None:
            raise self._bad(
                where,
                "has no completion_probabilities list of objects with an id and a logprob "
                "(n_probs was asked)",
            )
        logprobs, gaps = _align(tuple(ids), logprob_ids, entries[2])
        if logprobs is None:
            raise self._bad(
                where,
                f"has completion_probabilities (ids {_clip_ids(logprob_ids)}) that are not its "
                f"tokens ({_clip_ids(ids)}) with some left out",
            )
        self._check_shape(where, Basis.TOKEN_IDS, True)
        stop_type = item.get("stop_type")
        finish = LLAMACPP_FINISH.get(stop_type) if isinstance(stop_type, str) else None
        cut_short = _check_length(self, where, len(ids), finish, sampling.max_new_tokens)
        timings = item.get("timings")
        cached = timings.get("cache_n") if isinstance(timings, dict) else None
        completion = item.get("tokens_predicted")
        completion = completion if _is_int(completion) else len(ids)
        prompt_tokens = item.get("tokens_evaluated")
        prompt_tokens = prompt_tokens if _is_int(prompt_tokens) else 0
        self.generated_tokens += completion
        self.prompt_tokens += prompt_tokens
        return Output(
            text=text,
            tokens=tuple(ids),
            logprobs=logprobs,
            finish_reason=finish,
            completion_tokens=completion,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached if _is_int(cached) else None,
            basis=Basis.TOKEN_IDS,
            logprob_gaps=gaps,
            cut_short=cut_short,
        )


def _align(
    ids: tuple[int, ...], entry_ids: tuple[int, ...], values: tuple[float | None, ...]
) -> tuple[tuple[float | None, ...] | None, tuple[int, ...]]:
    """The logprob of each token, None where llama.cpp left the token's entry out, and those
    positions; (None, ()) when the entries are not the tokens with some left out.

    llama-server adds a token's entry to completion_probabilities only once its text is
    complete UTF-8 (`process_token` in tools/server/server-context.cpp): a token that ends
    inside a character has none. Which tokens those are depends on the tokens alone, so two
    outputs with the same tokens have the same gaps."""
    out: list[float | None] = []
    gaps: list[int] = []
    j = 0
    for i, tid in enumerate(ids):
        if j < len(entry_ids) and entry_ids[j] == tid:
            out.append(values[j])
            j += 1
        else:
            out.append(None)
            gaps.append(i)
    if j != len(entry_ids):
        return None, ()
    return tuple(out), tuple(gaps)


def _clip_ids(ids: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}{', ...' if len(ids) > limit else ''}] ({len(ids)})"


LLAMACPP_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}

VLLM_TOKEN_ID = re.compile(r"token_id:(\d+)")
"""How vLLM names a token with return_tokens_as_token_ids (vllm/entrypoints/openai)."""
"""llama.cpp's stop_type as a finish reason; `none` (not stopped) has none."""


def _text_prompt(prompt: Prompt) -> str:
    if not isinstance(prompt, str):
        raise ValueError("this protocol takes text prompts only")
    return prompt


ABORTED = frozenset({"abort", "error", "cancelled", "canceled"})
"""Finish reasons of a sequence the server gave up on: its tokens say nothing about determinism."""


def _check_length(
    client: EngineClient, where: str, n: int, finish: str | None, max_new_tokens: int
) -> str | None:
    """Raise for a length the protocol rules out; say why an output is short where it must
    not be (None when it is complete, or stopped early in a way the request allowed)."""
    if finish in ABORTED:
        raise client._bad(where, f"was not finished: the server ended it with reason {finish!r}")
    if n > max_new_tokens:
        raise client._bad(where, f"gave {n} tokens, more than the {max_new_tokens} asked for")
    if finish == "length" and n != max_new_tokens:
        raise client._bad(
            where, f"says it stopped at the length limit after {n} of {max_new_tokens} tokens"
        )
    if n == max_new_tokens:
        return None
    if finish is None:
        # Nothing says the sequence ended: it may be cut off anywhere.
        return f"{n} of {max_new_tokens} tokens and no finish reason"
    if client.asks_ignore_eos:
        # With ignore_eos and no stop strings, SGLang ends a sequence early only on a grammar,
        # an abort or a token outside the vocabulary (its sign of NaN logits).
        return f"{n} of {max_new_tokens} tokens, finish reason {finish!r} although ignore_eos was asked"
    return None


def _redirect(response: httpx.Response) -> str:
    if not response.is_redirect:
        return ""
    return f" (a redirect to {response.headers.get('location', 'nowhere')}, not followed)"


def _finish_reason(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return value if isinstance(value, str) else None


def _logprob_entries(value: Any, *, allow_null: bool) -> list[tuple[float | None, int]] | None:
    """[[logprob, token_id, ...], ...] as (logprob, id) pairs; None when it is not that."""
    if not isinstance(value, list):
        return None
    out = []
    for entry in value:
        if not isinstance(entry, list | tuple) or len(entry) < 2 or not _is_int(entry[1]):
            return None
        lp = entry[0]
        if not (_is_number(lp) or (allow_null and lp is None)):
            return None
        out.append((lp, entry[1]))
    return out


def _unlisted(strings: tuple[str, ...], text: str, finish: str | None, max_new: int) -> int:
    """Tokens an output has but its chat-shaped logprobs do not list: llama-server lists a token
    only once its text is complete UTF-8, and the next entry's string carries the held-back
    bytes (`process_token` in tools/server/server-context.cpp). Only where the output says it
    reached the length limit and the entries still spell its whole text is that what happened;
    anything else stays a short output for the length rules to judge."""
    if finish != "length" or len(strings) >= max_new or "".join(strings) != text:
        return 0
    return max_new - len(strings)


LOG_ZERO = -3.4028234663852886e38
"""How llama.cpp writes the log of a probability 0: the lowest float32, because its JSON
library turns -inf into null (`completion_token_output::logarithm` in tools/server/server-task.cpp).
Read back as -inf, so that the evidence rules see a probability 0 for what it is."""


def _logprob(value: float | None) -> float | None:
    if value is not None and value <= LOG_ZERO:
        return float("-inf")
    return value


def _token_entries(
    content: Any,
) -> tuple[tuple[int, ...] | None, tuple[str, ...], tuple[float | None, ...]] | None:
    """(ids or None, token strings, logprobs) of `[{"id", "token", "logprob"}, ...]` (llama.cpp's
    completion_probabilities and the chat logprobs shape); None when it is not that shape. A
    null logprob (how llama.cpp's JSON writes NaN) is kept, then judged as no evidence."""
    if not isinstance(content, list):
        return None
    ids: list[int] = []
    strings: list[str] = []
    values: list[float | None] = []
    for entry in content:
        if not isinstance(entry, dict):
            return None
        token, value, tid = entry.get("token"), entry.get("logprob"), entry.get("id")
        if not isinstance(token, str) or not (value is None or _is_number(value)):
            return None
        if tid is not None and not _is_int(tid):
            return None
        strings.append(token)
        values.append(_logprob(value))
        if tid is not None:
            ids.append(tid)
    if ids and len(ids) != len(strings):
        return None  # ids for some tokens and not others: no consistent basis
    return (tuple(ids) if ids or not strings else None), tuple(strings), tuple(values)


def _are_ids(tokens: tuple[int, ...] | tuple[str, ...]) -> TypeGuard[tuple[int, ...]]:
    return all(_is_int(t) for t in tokens)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return f"a JSON list of {len(value)}"
    if value is None:
        return "null"
    return f"a JSON {type(value).__name__}"


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."
