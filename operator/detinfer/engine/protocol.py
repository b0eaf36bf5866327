"""Checking request bodies of the SGLang and OpenAI APIs: a BadRequest names the field and value.

The admin endpoints' bodies take the fields of SGLang 0.5.23's request types
(python/sglang/srt/managers/io_struct.py) that the reference engine acts on; any other field is
refused, so a client never believes a field did something here that it did not."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from detinfer.engine.config import ModelConfig
from detinfer.engine.sampling import SamplingParams
from detinfer.engine.tokenizer import encode

MAX_BATCH = 512
# The deepest body the API has is a batch of input_ids (2 levels) with sampling_params (3).
MAX_JSON_DEPTH = 32
GENERATE_FIELDS = {
    "text",
    "input_ids",
    "sampling_params",
    "return_logprob",
    "logprob_start_len",
    "stream",
    "rid",
    "lora_path",
}
SAMPLING_FIELDS = {
    "temperature",
    "max_new_tokens",
    "sampling_seed",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "ignore_eos",
}
COMPLETION_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "logprobs",
    "stream",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "echo",
    "user",
}


class BadRequest(ValueError):
    pass


@dataclass
class Prompt:
    ids: list[int]
    params: SamplingParams
    seed: int | None
    return_logprob: bool
    logprob_start_len: int
    lora_path: str | None = None
    """The name of the LoRA adapter it runs with, as SGLang's /generate takes it."""


def parse_body(raw: bytes) -> Any:
    """A request body as JSON values; BadRequest for anything a client got wrong, never another
    error: invalid UTF-8, invalid JSON, NaN or Infinity, numbers Python will not read, nesting
    deeper than MAX_JSON_DEPTH, and strings (or keys) with lone surrogates, which JSON's
    \\ud800 escapes can carry but no text can be encoded from."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the request body is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing more than 4300 digits
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    _check_json(body)
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_json(body: Any) -> None:
    # Iterative: json.loads accepts nesting up to the interpreter's recursion limit.
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path or "the request body")
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    where = f"{path}.{key}" if path else key
                    _check_text(key, f"the key {where!r}"[:80])
                    stack.append((item, where, depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, name: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            f"{name}: the string holds a lone surrogate ({text[exc.start]!r} at character "
            f"{exc.start}); it is not valid Unicode"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown(body: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(
            f"{where}{extra[0]}: unknown field; known fields are {', '.join(sorted(allowed))}"
        )


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name}: {_short(value)} is not an integer")
    if not low <= value <= high:
        raise BadRequest(f"{name}: {value} is out of range [{low}, {high}]")
    return value


def _float(value: Any, name: str, low: float, high: float, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name}: {_short(value)} is not a finite number")
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise BadRequest(f"{name}: {value} is out of range {bracket}{low}, {high}]")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name}: {_short(value)} is not true or false")
    return value


def sampling_params(
    raw: Any, config: ModelConfig, where: str = "sampling_params"
) -> SamplingParams:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: {_short(raw)} is not an object")
    _unknown(raw, SAMPLING_FIELDS, f"{where}.")
    p = SamplingParams()
    values: dict[str, Any] = {}
    if "temperature" in raw:
        values["temperature"] = _float(raw["temperature"], f"{where}.temperature", 0.0, 100.0)
    if "max_new_tokens" in raw:
        values["max_new_tokens"] = _int(
            raw["max_new_tokens"], f"{where}.max_new_tokens", 0, config.context_length
        )
    if raw.get("sampling_seed") is not None:
        # SGLang's range (SamplingParams.verify in python/sglang/srt/sampling/sampling_params.py).
        values["sampling_seed"] = _int(
            raw["sampling_seed"], f"{where}.sampling_seed", -(2**63), 2**63 - 1
        )
    if "top_p" in raw:
        values["top_p"] = _float(raw["top_p"], f"{where}.top_p", 0.0, 1.0, open_low=True)
    if "top_k" in raw:
        top_k = _int(raw["top_k"], f"{where}.top_k", -1, config.vocab_size)
        if top_k == 0:
            raise BadRequest(f"{where}.top_k: 0 is not allowed; use -1 for no limit")
        values["top_k"] = top_k
    for name in ("frequency_penalty", "presence_penalty"):
        if name in raw:
            values[name] = _float(raw[name], f"{where}.{name}", -2.0, 2.0)
    if "ignore_eos" in raw:
        values["ignore_eos"] = _bool(raw["ignore_eos"], f"{where}.ignore_eos")
    return SamplingParams(**{**p.__dict__, **values})


def _ids(value: Any, name: str, config: ModelConfig) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{name}: {_short(value)} is not a non-empty list of token ids")
    for i, token in enumerate(value):
        _int(token, f"{name}[{i}]", 0, config.vocab_size - 1)
    return value


def generate_prompts(body: Any, config: ModelConfig) -> tuple[list[Prompt], bool, bool]:
    """A /generate body -> (prompts, was a list, stream)."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body {_short(body)} is not a JSON object")
    _unknown(body, GENERATE_FIELDS, "")
    has_text, has_ids = body.get("text") is not None, body.get("input_ids") is not None
    if has_text == has_ids:
        raise BadRequest("give exactly one of text and input_ids")
    if has_text:
        text = body["text"]
        batched = isinstance(text, list)
        texts = text if batched else [text]
        if batched and not texts:
            raise BadRequest("text: [] is empty")
        id_lists = []
        for i, t in enumerate(texts):
            name = f"text[{i}]" if batched else "text"
            if not isinstance(t, str):
                raise BadRequest(f"{name}: {_short(t)} is not a string")
            if not t:
                raise BadRequest(f"{name}: the prompt is empty")
            id_lists.append(encode(t))
    else:
        ids = body["input_ids"]
        batched = isinstance(ids, list) and bool(ids) and isinstance(ids[0], list)
        raw = ids if batched else [ids]
        id_lists = [
            _ids(x, f"input_ids[{i}]" if batched else "input_ids", config)
            for i, x in enumerate(raw)
        ]
    if len(id_lists) > MAX_BATCH:
        raise BadRequest(f"a batch of {len(id_lists)} prompts is more than {MAX_BATCH}")
    raw_params = body.get("sampling_params")
    if isinstance(raw_params, list):
        if len(raw_params) != len(id_lists):
            raise BadRequest(
                f"sampling_params: a list of {len(raw_params)} for {len(id_lists)} prompts"
            )
        params = [
            sampling_params(p, config, f"sampling_params[{i}]") for i, p in enumerate(raw_params)
        ]
    else:
        params = [sampling_params(raw_params, config)] * len(id_lists)
    return_logprob = _bool(body.get("return_logprob", False), "return_logprob")
    start = body.get("logprob_start_len", -1)
    start = _int(start, "logprob_start_len", -1, config.context_length)
    stream = _bool(body.get("stream", False), "stream")
    if stream and len(id_lists) > 1:
        raise BadRequest("stream: the reference engine streams single prompts only")
    adapters = _lora_paths(body.get("lora_path"), len(id_lists))
    prompts = []
    for i, (ids, p) in enumerate(zip(id_lists, params, strict=True)):
        _check_length(ids, p, config, i if batched else None)
        if start >= len(ids):
            raise BadRequest(
                f"logprob_start_len: {start} is not below the prompt's {len(ids)} tokens"
            )
        prompts.append(Prompt(ids, p, p.sampling_seed, return_logprob, start, adapters[i]))
    return prompts, batched, stream


def _lora_paths(raw: Any, prompts: int) -> list[str | None]:
    """lora_path: one adapter name for every prompt, or a list with one (or null) per prompt."""
    if raw is None or isinstance(raw, str):
        return [raw] * prompts
    if not isinstance(raw, list) or len(raw) != prompts:
        raise BadRequest(
            f"lora_path: {_short(raw)} is not an adapter name or a list of {prompts} of them"
        )
    for i, name in enumerate(raw):
        if name is not None and not isinstance(name, str):
            raise BadRequest(f"lora_path[{i}]: {_short(name)} is not an adapter name")
    return raw


def _check_length(ids: list[int], p: SamplingParams, config: ModelConfig, index: int | None):
    if len(ids) + p.max_new_tokens > config.context_length:
        where = "the prompt" if index is None else f"prompt {index}"
        raise BadRequest(
            f"{where} has {len(ids)} tokens; with max_new_tokens {p.max_new_tokens} that is more "
            f"than the context length {config.context_length}"
        )


def completion_prompts(body: Any, config: ModelConfig) -> tuple[list[Prompt], int | None]:
    """A /v1/completions body -> (prompts, logprobs asked for)."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body {_short(body)} is not a JSON object")
    _unknown(body, COMPLETION_FIELDS, "")
    if "prompt" not in body:
        raise BadRequest("prompt: required")
    prompt = body["prompt"]
    texts = prompt if isinstance(prompt, list) else [prompt]
    if not texts:
        raise BadRequest("prompt: [] is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t:
            raise BadRequest(f"prompt[{i}]: {_short(t)} is not a non-empty string")
    if body.get("n", 1) != 1:
        raise BadRequest(f"n: {_short(body['n'])}; the reference engine gives one choice")
    if body.get("stream", False):
        raise BadRequest("stream: the reference engine's /v1/completions does not stream")
    if body.get("echo", False):
        raise BadRequest("echo: not supported by the reference engine")
    raw = {
        "max_new_tokens": body.get("max_tokens", 16),
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "sampling_seed": body.get("seed"),
        "frequency_penalty": body.get("frequency_penalty", 0.0),
        "presence_penalty": body.get("presence_penalty", 0.0),
    }
    try:
        params = sampling_params(raw, config, "")
    except BadRequest as exc:
        message = str(exc).lstrip(".")
        for ours, theirs in (("max_new_tokens", "max_tokens"), ("sampling_seed", "seed")):
            message = message.replace(ours, theirs)
        raise BadRequest(message) from None
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _int(logprobs, "logprobs", 0, 5)
    prompts = []
    for i, t in enumerate(texts):
        ids = encode(t)
        _check_length(ids, params, config, i)
        prompts.append(Prompt(ids, params, params.sampling_seed, logprobs is not None, -1))
    return prompts, logprobs


@dataclass(frozen=True)
class UpdateWeights:
    """POST /update_weights_from_disk (SGLang's UpdateWeightFromDiskReqInput)."""

    model_path: str
    weight_version: str | None
    abort_all_requests: bool


def _admin_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"the request body {_short(body)} is not a JSON object")
    _unknown(body, allowed, "")
    return body


def _string(body: dict[str, Any], name: str) -> str:
    if name not in body:
        raise BadRequest(f"{name}: required")
    value = body[name]
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name}: {_short(value)} is not a non-empty string")
    return value


def update_weights_request(body: Any) -> UpdateWeights:
    body = _admin_body(body, {"model_path", "weight_version", "abort_all_requests"})
    version = None if body.get("weight_version") is None else _string(body, "weight_version")
    return UpdateWeights(
        _string(body, "model_path"),
        version,
        _bool(body.get("abort_all_requests", False), "abort_all_requests"),
    )


def weight_version_request(body: Any) -> tuple[str, bool]:
    """POST /update_weight_version: (new_version, abort_all_requests; SGLang's default true)."""
    body = _admin_body(body, {"new_version", "abort_all_requests"})
    return _string(body, "new_version"), _bool(
        body.get("abort_all_requests", True), "abort_all_requests"
    )


def load_lora_request(body: Any) -> tuple[str, str]:
    """POST /load_lora_adapter: (lora_name, lora_path)."""
    body = _admin_body(body, {"lora_name", "lora_path"})
    return _string(body, "lora_name"), _string(body, "lora_path")


def unload_lora_request(body: Any) -> str:
    """POST /unload_lora_adapter: lora_name."""
    return _string(_admin_body(body, {"lora_name"}), "lora_name")
