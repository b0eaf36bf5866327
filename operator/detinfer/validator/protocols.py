"""Each --protocol's client, and what its requests look like on the wire (--plan)."""

from __future__ import annotations

import json

from detinfer.client_key import ClientKey
from detinfer.validator.chat import AnthropicClient, GeminiClient, OllamaClient, OpenAIChatClient
from detinfer.validator.client import (
    EngineClient,
    LlamaCppClient,
    OpenAIClient,
    Sampling,
    SGLangClient,
)
from detinfer.validator.config import EndpointSpec, Protocol, ValidatorConfig

CLIENTS: dict[Protocol, type[EngineClient]] = {
    Protocol.SGLANG: SGLangClient,
    Protocol.OPENAI: OpenAIClient,
    Protocol.LLAMACPP: LlamaCppClient,
    Protocol.OPENAI_CHAT: OpenAIChatClient,
    Protocol.OLLAMA: OllamaClient,
    Protocol.ANTHROPIC: AnthropicClient,
    Protocol.GEMINI: GeminiClient,
}


def key_header(protocol: Protocol) -> str:
    """How the protocol's client sends a key, in words (read from the headers it makes)."""
    marker = "\x00key"
    headers = CLIENTS[protocol].headers(ClientKey(marker, "--plan"))
    (name,) = (h for h, v in headers.items() if marker in v)
    return "a bearer key" if name == "Authorization" else f"the {name} header"


def make_client(endpoint: EndpointSpec, config: ValidatorConfig) -> EngineClient:
    return CLIENTS[config.protocol](endpoint, config)


def describe_requests(config: ValidatorConfig) -> str:
    """What a greedy request of the suites looks like on the wire, made by the code that sends
    it (the probe's text shortened), for --plan. Never a key: headers are not shown."""
    sampling = Sampling(config.max_new_tokens, config.temperature, config.sampling_seed)
    prompt, model, protocol = "<prompt>", config.model, config.protocol
    body: dict
    if protocol == Protocol.OPENAI:
        body = OpenAIClient.body(prompt, sampling, model, config.vllm_token_ids)
    elif protocol == Protocol.LLAMACPP:
        body = LlamaCppClient.body(prompt, sampling, bool(config.sends_cache_prompt))
    elif protocol == Protocol.OPENAI_CHAT:
        body = OpenAIChatClient.body(prompt, sampling, model, config.vllm_token_ids)
    elif protocol == Protocol.OLLAMA:
        body = OllamaClient.body(prompt, sampling, model)
    elif protocol == Protocol.ANTHROPIC:
        body = AnthropicClient.body(prompt, sampling, model or "")
    elif protocol == Protocol.GEMINI:
        body = GeminiClient.body(prompt, sampling)
    else:
        body = SGLangClient.body(prompt, sampling, None)
    request = protocol.traits.request.replace("MODEL", (model or "").removeprefix("models/"))
    if protocol.traits.list_batches:
        where = "a batch sends a list of prompts in one request" + (
            " (one task per prompt, spread over the server's slots)"
            if protocol == Protocol.LLAMACPP
            else ""
        )
    else:
        where = (
            "the API takes one prompt per request: a batch of n goes out as n requests at once, "
            "for the server to batch as it likes"
        )
    return f"requests: {request} {json.dumps(body)}; {where}"
