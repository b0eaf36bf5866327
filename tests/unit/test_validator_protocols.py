"""The protocols that take one prompt per request (issue #28): OpenAI chat completions, Ollama's
/api/generate, Anthropic's messages and Gemini's generateContent.

The hosted APIs cannot be reached here: FakeEngine (tests/support/fake_engine.py) answers in
the shapes of their public API references, as a real HTTP server on 127.0.0.1. The real servers
that speak chat and Ollama's API are tested in tests/engines/.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from detinfer.api import Verdict
from detinfer.cli import main
from detinfer.validator.chat import GeminiClient, OllamaClient, OpenAIChatClient
from detinfer.validator.client import Sampling
from detinfer.validator.config import Protocol, ValidatorConfig
from detinfer.validator.errors import ConfigError, CouldNotTest, ProtocolError
from tests.support.fake_engine import FakeEngine
from tests.unit.test_validator import validate_cli  # noqa: F401 (a fixture)

MODEL = "fake/model"
KEY = "sk-test-3f9a1c0b7d"
ONE_PROMPT = ("openai-chat", "ollama", "anthropic", "gemini")
QUICK = ("--max-new-tokens", "8", "--max-batch-size", "5")


def args(protocol: str, *more: str) -> list[str]:
    model = ["--model", MODEL] if protocol in ("anthropic", "gemini") else []
    return ["--protocol", protocol, *model, *QUICK, *more]


@pytest.mark.parametrize(
    ("protocol", "compared_on"),
    [
        ("openai-chat", "tokens+logprobs"),
        ("ollama", "tokens+logprobs"),
        ("anthropic", "text"),
        ("gemini", "tokenIds+logprobs"),
    ],
)
def test_a_deterministic_server_passes_on_what_each_protocol_gives(
    validate_cli,  # noqa: F811
    protocol,
    compared_on,
):
    with FakeEngine(delay=0.01) as engine:
        run = validate_cli(*args(protocol), endpoints=[("p", engine)])
    assert run.rc == 0, run.out
    assert run.report["comparedOn"] == compared_on
    assert run.report["verdict"] == "Deterministic"
    radix = next(s for s in run.report["suites"] if s["name"] == "RadixCache")
    assert radix["skipped"] == f"the {protocol} protocol cannot send token ids"
    # One prompt per request: every prompt of every batch was its own request.
    assert run.report["requests"] == len(engine.bodies)
    assert {path for path, _ in engine.bodies} == {
        {
            "openai-chat": "/v1/chat/completions",
            "ollama": "/api/generate",
            "anthropic": "/v1/messages",
            "gemini": f"/v1beta/models/{MODEL}:generateContent",
        }[protocol]
    }


@pytest.mark.parametrize("protocol", ONE_PROMPT)
def test_a_batch_goes_out_as_concurrent_requests_and_concurrency_variance_is_caught(
    validate_cli,  # noqa: F811
    protocol,
):
    """No list batches: Single's batch of 2 is two requests at once, which the "concurrent"
    engine answers with another last bit of token 0's logprob (or, where only text comes back,
    which it cannot show: then the text stays the same and the verdict says so)."""
    # Each answer takes 0.2 s, so that requests sent at once overlap even on a loaded machine.
    with FakeEngine(variance="concurrent", delay=0.2) as engine:
        run = validate_cli(*args(protocol, "--suites", "Single"), endpoints=[("p", engine)])
    single = run.suite("Single")
    if protocol == "anthropic":
        # Text only: a flipped logprob bit is invisible; nothing here says otherwise.
        assert run.rc == 0 and single.passed, run.out
        return
    assert run.rc == 1, run.out
    assert re.match(
        r"batch of \d+, copy \d+ vs batch of 1, copy 1 \(the probe prompt\): logprob of output "
        r"token 0",
        single.first_divergence,
    ), single.first_divergence


def test_anthropic_has_no_seed_so_sampling_does_not_run(validate_cli):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(*args("anthropic", "--suites", "Sampling"), endpoints=[("p", engine)])
    sampling = next(s for s in run.report["suites"] if s["name"] == "Sampling")
    assert sampling["skipped"] == (
        "the anthropic protocol has no seed: nothing promises that sampled outputs repeat"
    )
    assert not any("seed" in body for _, body in engine.bodies)


@pytest.mark.parametrize(("protocol", "where"), [("openai-chat", "seed"), ("gemini", "seed")])
def test_seeded_sampling_is_judged_and_unseeded_is_only_reported(
    validate_cli,  # noqa: F811
    protocol,
    where,
):
    """The seeded samples agree (so the seed was sent); the unseeded ones differ, and no engine
    behind these protocols promises otherwise: a note, not a failure."""
    with FakeEngine(variance="unseeded") as engine:
        run = validate_cli(*args(protocol, "--suites", "Sampling"), endpoints=[("p", engine)])
    assert run.rc == 0, run.out
    report = next(s for s in run.report["suites"] if s["name"] == "Sampling")
    note = next(n for n in report["notes"] if n.startswith("without a seed (not judged"))
    assert "first difference: no seed" in note
    if protocol == "gemini":
        seeds = {b["generationConfig"].get("seed") for _, b in engine.bodies}
    else:
        seeds = {b.get("seed") for _, b in engine.bodies}
    assert seeds == {42, None}


def test_a_change_of_backend_between_samples_is_named_in_the_reason(validate_cli):  # noqa: F811
    with FakeEngine(backends=("fp_a", "fp_a", "fp_b")) as engine:
        run = validate_cli(*args("openai-chat", "--suites", "Single"), endpoints=[("p", engine)])
    assert run.rc == 0, run.out
    assert "the answers named more than one backend (p: 'fp_a' (" in run.report["reason"]
    assert set(run.report["endpoints"][0]["servedBy"]) == {"fp_a", "fp_b"}


def test_one_backend_is_recorded_and_not_a_finding(validate_cli):  # noqa: F811
    with FakeEngine() as engine:
        run = validate_cli(*args("gemini", "--suites", "Single"), endpoints=[("p", engine)])
    assert run.report["endpoints"][0]["servedBy"] == {"fp_fake_1": run.report["requests"]}
    assert "backend" not in run.report["reason"]


@pytest.mark.parametrize("protocol", ONE_PROMPT)
def test_the_key_goes_in_each_apis_own_header_and_nowhere_else(
    validate_cli,  # noqa: F811
    protocol,
    monkeypatch,
    tmp_path,
):
    monkeypatch.setenv("DETINFER_API_KEY", KEY)
    with FakeEngine(api_key=KEY) as engine:
        run = validate_cli(*args(protocol, "--suites", "Single"), endpoints=[("p", engine)])
    assert run.rc == 0, run.out
    assert engine.refused == []
    for text in (run.out, run.err, run.summary_text, json.dumps(run.report)):
        assert KEY not in text
    # The protection is real: without the key the same server refuses, and the run cannot test.
    monkeypatch.delenv("DETINFER_API_KEY")
    with FakeEngine(api_key=KEY) as engine:
        run = validate_cli(*args(protocol, "--suites", "Single"), endpoints=[("p", engine)])
    assert run.rc == Verdict.COULD_NOT_TEST.exit_code, run.out
    assert "(HTTP 401): no client key was sent" in run.report["reason"]


def test_headers_per_protocol():
    from detinfer.client_key import ClientKey
    from detinfer.validator.chat import AnthropicClient

    key = ClientKey(KEY, "test")
    assert OpenAIChatClient.headers(key) == {"Authorization": f"Bearer {KEY}"}
    assert OllamaClient.headers(key) == {"Authorization": f"Bearer {KEY}"}
    assert AnthropicClient.headers(key) == {"anthropic-version": "2023-06-01", "x-api-key": KEY}
    assert AnthropicClient.headers(None) == {"anthropic-version": "2023-06-01"}
    assert GeminiClient.headers(key) == {"x-goog-api-key": KEY}


@pytest.mark.parametrize("protocol", ["anthropic", "gemini"])
def test_hosted_apis_need_the_model_named(protocol):
    with pytest.raises(ConfigError, match=f"--model: the {protocol} protocol needs the model"):
        ValidatorConfig(endpoints=["https://api.example.com"], protocol=protocol)


@pytest.mark.parametrize(
    ("protocol", "words"),
    [
        ("openai-chat", 'POST /v1/chat/completions {"model": "m", "messages": [{"role": "user"'),
        ("ollama", 'POST /api/generate {"model": "m", "prompt": "<prompt>", "raw": true'),
        ("anthropic", 'POST /v1/messages {"model": "m", "max_tokens": 64'),
        ("gemini", 'POST /v1beta/models/m:generateContent {"contents": [{"role": "user"'),
    ],
)
def test_the_plan_says_what_each_sends(protocol, words, capsys, monkeypatch):
    monkeypatch.setenv("DETINFER_API_KEY", KEY)
    rc = main(["validate", "--plan", "--protocol", protocol, "--model", "m"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert words in out
    assert "one prompt per request: a batch of n goes out as n requests at once" in out
    assert KEY not in out
    sampling = next(line for line in out.splitlines() if line.lstrip().startswith("Sampling"))
    if protocol == "anthropic":
        assert "skipped with the anthropic protocol (no seed)" in sampling
    else:
        assert "(reported, not judged)" in sampling


# --- answers that break a protocol: could not test, never a verdict -----------------------------


def answer_with(client: Any, payload: Any) -> Any:
    """`client.generate_one` against a transport that answers `payload` (a unit test of the
    parser: what the HTTP part does is tested above on a real server)."""

    async def go() -> Any:
        client._http = httpx.AsyncClient(
            base_url="http://127.0.0.1:1",
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json=payload)),
        )
        try:
            return await client.generate_one("x", Sampling(3, 0.0, 42))
        finally:
            await client._http.aclose()

    return asyncio.run(go())


def client_of(protocol: str) -> Any:
    from detinfer.validator.protocols import make_client

    cfg = ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol=protocol, model="m")
    return make_client(cfg.endpoint_specs[0], cfg)


def gemini(reason: str = "MAX_TOKENS", **candidate: Any) -> dict[str, Any]:
    chosen = [{"token": t, "tokenId": i, "logProbability": -0.5 - i} for i, t in enumerate("abc")]
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": "abc"}], "role": "model"},
                "finishReason": reason,
                "logprobsResult": {"chosenCandidates": chosen},
                **candidate,
            }
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 3},
        "modelVersion": "gemini-x-001",
    }


def test_gemini_reads_token_ids_and_logprobs_of_the_chosen_candidates():
    out = answer_with(client_of("gemini"), gemini())
    assert (out.tokens, out.logprobs, out.finish_reason) == (
        (0, 1, 2),
        (-0.5, -1.5, -2.5),
        "length",
    )


@pytest.mark.parametrize(
    ("protocol", "payload", "words"),
    [
        ("gemini", gemini("SAFETY"), "was not finished normally: finishReason 'SAFETY'"),
        ("gemini", {"candidates": []}, "has 0 candidates where 1 was asked"),
        (
            "gemini",
            gemini(logprobsResult={"chosenCandidates": "x"}),
            "has a logprobsResult without a chosenCandidates list",
        ),
        ("openai-chat", {"choices": [{"index": 0, "message": {}}]}, "has no choices[0].message"),
        (
            "openai-chat",
            {"choices": [{"index": 0, "message": {"content": "a"}, "logprobs": {"content": 1}}]},
            "has choices[0].logprobs.content that is not a list",
        ),
        ("ollama", {"response": "a", "done": False}, "says it is not done"),
        ("ollama", {"error": "model 'm' not found"}, "answered an error"),
        (
            "ollama",
            {"response": "abcd", "done": True, "done_reason": "length", "eval_count": 4},
            "gave 4 tokens, more than the 3 asked for",
        ),
        ("anthropic", {"content": [], "stop_reason": "pause_turn"}, "stop_reason 'pause_turn'"),
        (
            "anthropic",
            {"type": "error", "error": {"type": "overloaded_error"}},
            "answered an error",
        ),
    ],
)
def test_an_answer_that_breaks_the_protocol_cannot_be_tested(protocol, payload, words):
    with pytest.raises(ProtocolError, match=re.escape(words)):
        answer_with(client_of(protocol), payload)


def test_protocol_error_is_could_not_test():
    assert issubclass(ProtocolError, CouldNotTest)


def test_every_protocol_has_traits_and_a_client():
    from detinfer.validator.options import PROTOCOLS
    from detinfer.validator.protocols import CLIENTS

    assert set(PROTOCOLS) == {p.value for p in Protocol} == {p.value for p in CLIENTS}
    assert all(CLIENTS[p].protocol == p for p in Protocol)


@pytest.mark.parametrize(
    ("protocol", "how"),
    [
        ("sglang", "a bearer key"),
        ("ollama", "a bearer key"),
        ("anthropic", "the x-api-key header"),
        ("gemini", "the x-goog-api-key header"),
    ],
)
def test_the_plan_says_how_the_key_goes_and_never_what_it_is(protocol, how, capsys, monkeypatch):
    monkeypatch.setenv("DETINFER_API_KEY", KEY)
    assert main(["validate", "--plan", "--protocol", protocol, "--model", "m"]) == 0
    out = capsys.readouterr().out
    assert f"client key: sent as {how} on every request, from DETINFER_API_KEY" in out
    assert KEY not in out


@pytest.mark.parametrize("protocol", ["openai", "openai-chat"])
def test_vllm_token_ids_are_compared_as_ids(validate_cli, protocol):  # noqa: F811
    """vLLM names a token `token_id:<id>` when asked (return_tokens_as_token_ids): the ids are
    compared, not strings (vLLM writes a token that ends inside a UTF-8 character as '')."""
    with FakeEngine() as engine:
        run = validate_cli(
            *args(protocol, "--suites", "Single", "--vllm-token-ids"), endpoints=[("p", engine)]
        )
    assert run.rc == 0, run.out
    assert run.report["comparedOn"] == "tokenIds+logprobs"
    assert run.report["options"]["vllmTokenIds"] is True


def test_a_server_that_ignores_the_token_ids_extension_cannot_be_tested():
    client = client_of("openai-chat")
    client.config = ValidatorConfig(
        endpoints=["http://127.0.0.1:1"], protocol="openai-chat", model="m", vllm_token_ids=True
    )
    entry = {"token": "ab", "logprob": -1.0, "bytes": [97, 98], "top_logprobs": []}
    answer = {
        "choices": [
            {
                "index": 0,
                "message": {"content": "ab"},
                "logprobs": {"content": [entry]},
                "finish_reason": "length",
            }
        ]
    }
    with pytest.raises(ProtocolError, match="that is not token_id:<id> although"):
        answer_with(client, answer)


def test_vllm_token_ids_only_on_the_openai_protocols():
    with pytest.raises(ConfigError, match="--vllm-token-ids: only the openai and openai-chat"):
        ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol="ollama", vllm_token_ids=True)


@pytest.mark.parametrize(("variance", "noted"), [("greedy-only", True), (None, False)])
def test_sampling_that_gives_the_greedy_output_is_noted(validate_cli, variance, noted):  # noqa: F811
    """A server that ignores the temperature passes Sampling on greedy outputs: the pass is
    kept (the outputs did repeat), and a note says it may say nothing about seeded sampling."""
    with FakeEngine(variance=variance) as engine:
        run = validate_cli(
            *args("openai-chat", "--suites", "Single,Sampling"), endpoints=[("p", engine)]
        )
    assert run.rc == 0, run.out
    notes = next(s for s in run.report["suites"] if s["name"] == "Sampling")["notes"]
    assert any("gave its greedy output (Single batch of 1, copy 1)" in n for n in notes) == noted
