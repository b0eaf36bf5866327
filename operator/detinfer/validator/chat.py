"""Protocols that take one prompt per request: OpenAI's chat completions, Ollama's
/api/generate, Anthropic's messages and Gemini's generateContent.

None of these APIs takes a list of prompts, so a batch of the suites goes out as that many
requests at once and the server batches them as it likes (what its users' traffic does too).
Every answer is checked as in detinfer.validator.client: the wrong shape is a ProtocolError, a
refusal or transport error is CouldNotTest, never a verdict. Shapes, from each API's public
reference:

- chat completions: https://platform.openai.com/docs/api-reference/chat/create (`seed`,
  `logprobs`, `top_logprobs`; `choices[].logprobs.content[]` of `{token, logprob, bytes}`,
  `system_fingerprint`);
- Ollama: https://docs.ollama.com/api/generate (`raw`, `options.seed`, `options.num_predict`,
  `logprobs`; `response`, `done_reason`, `eval_count`, `logprobs[]` of `{token, logprob}`);
- Anthropic: https://docs.anthropic.com/en/api/messages (`x-api-key`, `anthropic-version`;
  `content[]` text blocks, `stop_reason`, `usage.output_tokens`; no seed, no logprobs);
- Gemini: https://ai.google.dev/api/generate-content (`x-goog-api-key`; `generationConfig`
  `seed`, `responseLogprobs`; `candidates[].logprobsResult.chosenCandidates[]` of `{token,
  tokenId, logProbability}`, `finishReason`, `modelVersion`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from detinfer.client_key import ClientKey
from detinfer.validator.client import (
    EngineClient,
    OpenAIClient,
    Sampling,
    _are_ids,
    _check_length,
    _is_int,
    _is_number,
    _kind,
    _snippet,
    _text_prompt,
    _token_entries,
    _unlisted,
)
from detinfer.validator.compare import Basis, Output, Prompt
from detinfer.validator.config import EndpointSpec, Protocol, ValidatorConfig
from detinfer.validator.errors import CouldNotTest

ANTHROPIC_VERSION = "2023-06-01"
"""The `anthropic-version` header every request must carry (the Messages API's only version)."""


class OneRequestPerPrompt(EngineClient):
    """A batch of n prompts is n requests sent at once."""

    path: str
    """Where generation requests go."""

    async def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: Sampling,
        *,
        logprob_start_len: int | None = None,
    ) -> list[Output]:
        # No prompt logprobs here (RadixCache, which asks for them, needs token-id prompts).
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.generate_one(p, sampling)) for p in prompts]
        return [t.result() for t in tasks]

    def _object(self, data: Any, where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self._bad(where, f"answered {_kind(data)}, not a JSON object")
        if "error" in data:
            raise self._bad(where, f"answered an error: {_snippet(json.dumps(data['error']))}")
        return data

    def _count(self, completion: Any, prompt: Any, fallback: int) -> int:
        """Add the server's token counts; the completion's count (or `fallback`)."""
        done = completion if _is_int(completion) else fallback
        self.generated_tokens += done
        self.prompt_tokens += prompt if _is_int(prompt) else 0
        return done

    def _tokens_output(
        self,
        where: str,
        text: str,
        entries: tuple[tuple[int, ...] | None, tuple[str, ...], tuple[float | None, ...]] | None,
        finish: str | None,
        sampling: Sampling,
        completion: Any,
        prompt: Any,
    ) -> Output:
        """An output from its text and its `{token, logprob[, id]}` entries (None: text only)."""
        if entries is None:
            self._check_shape(where, Basis.TEXT, False)
            done = self._count(completion, prompt, 0)
            if done > sampling.max_new_tokens:
                raise self._bad(
                    where, f"gave {done} tokens, more than the {sampling.max_new_tokens} asked for"
                )
            return Output(
                text=text,
                tokens=None,
                finish_reason=finish,
                completion_tokens=done,
                basis=Basis.TEXT,
            )
        ids, strings, values = entries
        tokens: tuple[int, ...] | tuple[str, ...] = ids if ids is not None else strings
        basis = Basis.TOKEN_IDS if ids is not None and _are_ids(tokens) else Basis.TOKENS
        self._check_shape(where, basis, True)
        unlisted = _unlisted(strings, text, finish, sampling.max_new_tokens)
        cut_short = _check_length(
            self, where, len(tokens) + unlisted, finish, sampling.max_new_tokens
        )
        done = self._count(completion, prompt, len(tokens) + unlisted)
        return Output(
            text=text,
            tokens=tokens,
            logprobs=values,
            finish_reason=finish,
            completion_tokens=done,
            basis=basis,
            unlisted_tokens=unlisted,
            cut_short=cut_short,
        )


class OpenAIChatClient(OneRequestPerPrompt, OpenAIClient):
    """POST /v1/chat/completions: the prompt as one user message, `seed`, `logprobs` and
    `top_logprobs` 1; token strings and logprobs compared (ids where a server adds them, as
    llama-server does), the text where a server gives no logprobs. The chat template the server
    applies is part of what is tested, as it is for every client of that endpoint."""

    protocol = Protocol.OPENAI_CHAT
    path = "/v1/chat/completions"

    @staticmethod
    def body(
        prompt: str | list[str], sampling: Sampling, model: str | None, token_ids: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model or "default",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "logprobs": True,
            "top_logprobs": 1,
            "n": 1,
            "stream": False,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        if token_ids:
            body["return_tokens_as_token_ids"] = True
        return body

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        where = f"POST {self.path}"
        body = self.body(_text_prompt(prompt), sampling, self.model, self.config.vllm_token_ids)
        data = await self._post(self.path, body)
        choice = self._choices(data, where, 1)[0]
        self._served_by(data.get("system_fingerprint"))
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise self._bad(where, "has no choices[0].message.content string")
        finish = choice.get("finish_reason")
        finish = finish if isinstance(finish, str) else None
        raw = choice.get("logprobs")
        entries = None
        if raw is not None:
            content = raw.get("content") if isinstance(raw, dict) else None
            entries = _token_entries(content)
            if entries is None:
                raise self._bad(
                    where,
                    "has choices[0].logprobs.content that is not a list of objects with a "
                    "token string and a logprob",
                )
            if self.config.vllm_token_ids and entries[0] is None:
                ids = self._ids_of(entries[1], where)
                entries = (ids, entries[1], entries[2])  # type: ignore[assignment]
        usage = _dict(data.get("usage"))
        return self._tokens_output(
            where,
            text,
            entries,
            finish,
            sampling,
            usage.get("completion_tokens"),
            usage.get("prompt_tokens"),
        )


OLLAMA_FINISH = {"length": "length", "stop": "stop"}


class OllamaClient(OneRequestPerPrompt):
    """Ollama's POST /api/generate with `raw: true` (the prompt as it is, no template),
    `stream: false`, `options` `{num_predict, temperature, top_k, seed[, top_p]}` and
    `logprobs: true`; token strings and logprobs compared. Greedy requests send top_k 1, as the
    guides say; sampled ones top_k 0 (off), so that top_p alone shapes them, as elsewhere."""

    protocol = Protocol.OLLAMA
    path = "/api/generate"

    def __init__(self, endpoint: EndpointSpec, config: ValidatorConfig) -> None:
        super().__init__(endpoint, config)
        self.model = config.model

    async def _ready_without_health(self) -> bool:
        return await self._ready_at("/api/version")

    async def server_info(self) -> dict[str, Any]:
        """The model (given, or the first of GET /api/tags) and the version Ollama reports."""
        if self.model is None:
            tags, error = await self._get_info("/api/tags")
            models = tags.get("models") if isinstance(tags, dict) else None
            first = models[0] if isinstance(models, list) and models else None
            name = first.get("name") if isinstance(first, dict) else None
            if not isinstance(name, str):
                raise CouldNotTest(
                    f"{self.name}: cannot tell the model from GET /api/tags "
                    f"({error or 'no models'}); pass --model"
                )
            self.model = name
        version, _ = await self._get_info("/api/version")
        info: dict[str, Any] = {"model": self.model}
        if isinstance(version, dict) and isinstance(version.get("version"), str):
            info["version"] = version["version"]
        return info

    @staticmethod
    def body(prompt: str, sampling: Sampling, model: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_predict": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_k": 1 if sampling.temperature == 0 else 0,
        }
        if sampling.seed is not None:
            options["seed"] = sampling.seed
        if sampling.top_p < 1.0:
            options["top_p"] = sampling.top_p
        return {
            "model": model or "default",
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "logprobs": True,
            "options": options,
        }

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        where = f"POST {self.path}"
        data = self._object(
            await self._post(self.path, self.body(_text_prompt(prompt), sampling, self.model)),
            where,
        )
        text = data.get("response")
        if not isinstance(text, str):
            raise self._bad(where, "has no response string")
        if data.get("done") is not True:
            raise self._bad(where, "says it is not done (stream was off)")
        reason = data.get("done_reason")
        finish = OLLAMA_FINISH.get(reason, reason) if isinstance(reason, str) else None
        raw = data.get("logprobs")
        entries = None
        if raw is not None:
            entries = _token_entries(raw)
            if entries is None:
                raise self._bad(
                    where, "has logprobs that are not a list of objects with a token and a logprob"
                )
        return self._tokens_output(
            where,
            text,
            entries,
            finish,
            sampling,
            data.get("eval_count"),
            data.get("prompt_eval_count"),
        )


ANTHROPIC_FINISH = {
    "max_tokens": "length",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "refusal": "stop",
}


class AnthropicClient(OneRequestPerPrompt):
    """Anthropic's POST /v1/messages: the prompt as one user message, `max_tokens`,
    `temperature`, and `top_p` when sampling. The API has neither a seed nor logprobs: text is
    compared, and the Sampling suite does not run (nothing promises sampled text repeats)."""

    protocol = Protocol.ANTHROPIC
    path = "/v1/messages"

    def __init__(self, endpoint: EndpointSpec, config: ValidatorConfig) -> None:
        super().__init__(endpoint, config)
        self.model = config.model or ""

    @staticmethod
    def headers(key: ClientKey | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key is not None:
            headers["x-api-key"] = key.value
        return headers

    async def _ready_without_health(self) -> bool:
        return await self._ready_at(f"/v1/models/{self.model}")

    async def server_info(self) -> dict[str, Any]:
        return {"model": self.model}

    @staticmethod
    def body(prompt: str, sampling: Sampling, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": sampling.max_new_tokens,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": sampling.temperature,
        }
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        return body

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        where = f"POST {self.path}"
        data = self._object(
            await self._post(self.path, self.body(_text_prompt(prompt), sampling, self.model)),
            where,
        )
        blocks = data.get("content")
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise self._bad(where, "has no content list of blocks")
        texts = [b.get("text") for b in blocks if b.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise self._bad(where, "has a text block without a text string")
        self._served_by(data.get("model"))
        reason = data.get("stop_reason")
        if reason == "pause_turn" or not isinstance(reason, str):
            raise self._bad(where, f"was not finished: stop_reason {reason!r}")
        usage = _dict(data.get("usage"))
        return self._tokens_output(
            where,
            "".join(texts),
            None,
            ANTHROPIC_FINISH.get(reason, reason),
            sampling,
            usage.get("output_tokens"),
            usage.get("input_tokens"),
        )


GEMINI_FINISH = {"MAX_TOKENS": "length", "STOP": "stop"}
"""Gemini's finishReason as a finish reason; any other (SAFETY, RECITATION, ...) means the
candidate was withheld or cut off, which no comparison should rest on."""


class GeminiClient(OneRequestPerPrompt):
    """Gemini's POST /v1beta/models/MODEL:generateContent: one user turn, `generationConfig`
    `{temperature, maxOutputTokens, candidateCount 1, seed[, topP], responseLogprobs,
    logprobs 1}`; the chosen candidates' token ids (or strings) and logprobs compared."""

    protocol = Protocol.GEMINI

    def __init__(self, endpoint: EndpointSpec, config: ValidatorConfig) -> None:
        super().__init__(endpoint, config)
        self.model = (config.model or "").removeprefix("models/")
        self.path = f"/v1beta/models/{self.model}:generateContent"

    @staticmethod
    def headers(key: ClientKey | None) -> dict[str, str]:
        return {"x-goog-api-key": key.value} if key is not None else {}

    async def _ready_without_health(self) -> bool:
        return await self._ready_at(f"/v1beta/models/{self.model}")

    async def server_info(self) -> dict[str, Any]:
        return {"model": self.model}

    @staticmethod
    def body(prompt: str, sampling: Sampling) -> dict[str, Any]:
        config: dict[str, Any] = {
            "temperature": sampling.temperature,
            "maxOutputTokens": sampling.max_new_tokens,
            "candidateCount": 1,
            "responseLogprobs": True,
            "logprobs": 1,
        }
        if sampling.seed is not None:
            config["seed"] = sampling.seed
        if sampling.top_p < 1.0:
            config["topP"] = sampling.top_p
        return {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": config,
        }

    async def generate_one(self, prompt: Prompt, sampling: Sampling) -> Output:
        where = f"POST {self.path}"
        data = self._object(
            await self._post(self.path, self.body(_text_prompt(prompt), sampling)), where
        )
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or len(candidates) != 1:
            got = len(candidates) if isinstance(candidates, list) else _kind(candidates)
            raise self._bad(where, f"has {got} candidates where 1 was asked")
        candidate = candidates[0]
        if not isinstance(candidate, dict):
            raise self._bad(where, "has a candidate that is not an object")
        reason = candidate.get("finishReason")
        if reason not in GEMINI_FINISH:
            raise self._bad(where, f"was not finished normally: finishReason {reason!r}")
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise self._bad(where, "has no content.parts list")
        texts = [p.get("text", "") for p in parts]
        if not all(isinstance(t, str) for t in texts):
            raise self._bad(where, "has a part whose text is not a string")
        self._served_by(data.get("modelVersion"))
        entries = None
        result = candidate.get("logprobsResult")
        if result is not None:
            entries = _gemini_entries(result)
            if entries is None:
                raise self._bad(
                    where,
                    "has a logprobsResult without a chosenCandidates list of objects with a "
                    "token and a logProbability",
                )
        usage = _dict(data.get("usageMetadata"))
        return self._tokens_output(
            where,
            "".join(texts),
            entries,
            GEMINI_FINISH[reason],
            sampling,
            usage.get("candidatesTokenCount"),
            usage.get("promptTokenCount"),
        )


def _gemini_entries(
    result: Any,
) -> tuple[tuple[int, ...] | None, tuple[str, ...], tuple[float | None, ...]] | None:
    """chosenCandidates as the `{token, logprob, id}` entries of the other protocols."""
    chosen = result.get("chosenCandidates") if isinstance(result, dict) else None
    if not isinstance(chosen, list) or not all(isinstance(c, dict) for c in chosen):
        return None
    renamed = []
    for c in chosen:
        value = c.get("logProbability")
        if value is not None and not _is_number(value):
            return None
        renamed.append({"token": c.get("token"), "logprob": value, "id": c.get("tokenId")})
    return _token_entries(renamed)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
