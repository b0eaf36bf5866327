"""The options of `detinfer validate` and their defaults.

cli.py builds every subcommand's parser on each call, so this module imports nothing but
argparse and the shared defaults: `detinfer run` must not pay for httpx.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detinfer import client_key, validation_defaults

DEFAULT_TEMPERATURE = 0.0
DEFAULT_TIMEOUT_SECONDS = float(validation_defaults.TIMEOUT_SECONDS)
DEFAULT_REQUEST_TIMEOUT_SECONDS = 300.0
DEFAULT_WAIT_SECONDS = 120.0
PROTOCOLS = ("sglang", "openai", "llamacpp", "openai-chat", "ollama", "anthropic", "gemini")
ON_OFF = ("on", "off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `detinfer validate`."""
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="an engine to validate (repeatable); NAME is a pod name, a bare URL is named "
        "host:port",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=PROTOCOLS[0],
        help="sglang: POST /generate (token ids and logprobs); openai: POST /v1/completions "
        "(token ids and logprobs where the server gives them in the chat shape, else token "
        "strings and logprobs, else text; no RadixCache); llamacpp: llama.cpp's POST /completion "
        "(token ids and logprobs; RadixCache without prompt logprobs); openai-chat: POST "
        "/v1/chat/completions (token strings and logprobs, else text); ollama: Ollama's POST "
        "/api/generate, raw (token strings and logprobs); anthropic: POST /v1/messages (text "
        "only; no seed, so no Sampling suite); gemini: POST /v1beta/models/MODEL:generateContent "
        "(token ids or strings and logprobs where given). The last four take one prompt per "
        "request: a batch goes out as that many requests at once. Default %(default)s",
    )
    parser.add_argument(
        "--cache-prompt",
        choices=ON_OFF,
        help="llamacpp protocol: cache_prompt of every request (llama-server reuses a slot's "
        "KV cache for a shared prefix); default on, the server's own default",
    )
    parser.add_argument(
        "--vllm-token-ids",
        action="store_true",
        help="openai and openai-chat protocols: send vLLM's return_tokens_as_token_ids, so that "
        "token ids are compared, not token strings (vLLM writes a token that ends inside a "
        "UTF-8 character as '', so two such tokens look alike as strings); other servers may "
        "refuse the field",
    )
    parser.add_argument(
        "--suites",
        default="all",
        help="comma-separated: Single,Mixed,Prefix,RadixCache,PrefillDecode,LongContext,"
        "Concurrent,Sampling,CrossReplica, or all, or none (the fingerprint is always "
        "computed); default %(default)s",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=validation_defaults.TRIALS,
        help="samples per suite: batches (Mixed, Prefix), trials (RadixCache), requests "
        "(Concurrent, Sampling); Single's batches go up to 2 * trials + 1; default %(default)s",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=validation_defaults.MAX_NEW_TOKENS,
        help="tokens per sample; default %(default)s",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        help="largest Single batch, and bound of Sampling's (default: 2 * trials + 1, and "
        "Single then goes on up to the server's max_running_requests where /server_info reports "
        "it, with 8 new tokens a sequence in batches past 33). Give an engine's batch limit here where it "
        "does not report one (vLLM's --max-num-seqs, llama-server's slots)",
    )
    parser.add_argument(
        "--stop-at-first-failure",
        action="store_true",
        help="end each endpoint's suites at the first one that finds outputs differ (a faster "
        "NotDeterministic; the suites after it do not run)",
    )
    parser.add_argument(
        "--sampling-seed",
        type=int,
        default=validation_defaults.SAMPLING_SEED,
        help="sampling_params.sampling_seed (OpenAI: seed) of every request but Sampling's "
        "unseeded ones; default %(default)s",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="of the suites but Sampling, which samples at 0.8 with top_p 0.9 (the fingerprint is "
        "always greedy); default %(default)s",
    )
    parser.add_argument(
        "--expected-fingerprint",
        metavar="sha256:HEX",
        help="an endpoint whose fingerprint differs fails (FingerprintMismatch)",
    )
    expect = parser.add_argument_group(
        "expectations",
        "what the deployment asked for; an endpoint whose GET /server_info says otherwise fails "
        "(ServerMismatch, exit 1) and the suites do not run; one that does not say cannot be "
        "tested (exit 2). GET /model_info is read before and after the suites: a model path or "
        "weight version other than expected, or one that changed in between, is a "
        "ServerMismatch; one it does not report is noted. SGLang protocol only.",
    )
    expect.add_argument("--expect-version", metavar="VERSION", help="SGLang version, e.g. 0.5.23")
    expect.add_argument(
        "--expect-attention-backend",
        metavar="BACKEND",
        help="attention backend in use, as SGLang's --attention-backend names it (fa3, ...)",
    )
    expect.add_argument(
        "--expect-tensor-parallel-size", type=int, metavar="N", help="tp_size of the server"
    )
    expect.add_argument(
        "--expect-deterministic-inference",
        choices=ON_OFF,
        help="whether --enable-deterministic-inference is on",
    )
    expect.add_argument(
        "--expect-radix-cache", choices=ON_OFF, help="whether the radix (prefix) cache is on"
    )
    expect.add_argument(
        "--expect-model-path", metavar="PATH", help="model_path of /model_info (--model-path)"
    )
    expect.add_argument(
        "--expect-weight-version",
        metavar="VERSION",
        help="weight_version of /model_info (SGLang's --weight-version, or a weight update's)",
    )
    parser.add_argument(
        "--timeout-seconds",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="bound of the whole run; past it, exit 2; default %(default)s",
    )
    parser.add_argument(
        "--request-timeout-seconds",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        help="bound of one HTTP request; default %(default)s",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help="how long to wait for GET /health to answer 200 before testing; default %(default)s",
    )
    parser.add_argument(
        "--model",
        help="the model every request names (openai, openai-chat, ollama, anthropic, gemini); "
        "default: the first of GET /v1/models (Ollama: /api/tags); anthropic and gemini need it",
    )
    client_key.add_argument(parser)
    parser.add_argument("--report", type=Path, metavar="PATH", help="write the JSON report here")
    parser.add_argument(
        "--summary-file",
        type=Path,
        metavar="PATH",
        help="write the compact summary here, whatever the verdict (the Job: /dev/termination-log)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what each suite would send and the tokens it costs, then exit",
    )
