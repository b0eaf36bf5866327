"""llama.cpp's answers as the validator reads them: /completion (the llamacpp protocol) and the
chat-shaped logprobs of llama-server's /v1/completions (the openai protocol).

The shapes are those of llama.cpp's tools/server/server-task.cpp (`to_json_non_oaicompat`,
`to_json_oaicompat`, `probs_vector_to_json`) in the llama.cpp vendored by llama-cpp-python 0.3.36;
tests/engines/test_llamacpp.py runs the same code against the real server.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from detinfer.validator.client import (
    LOG_ZERO,
    LlamaCppClient,
    OpenAIClient,
    Sampling,
)
from detinfer.validator.compare import Basis, describe_divergence
from detinfer.validator.config import Protocol, ValidatorConfig
from detinfer.validator.errors import ConfigError, ProtocolError
from detinfer.validator.evidence import Evidence
from detinfer.validator.protocols import describe_requests
from detinfer.validator.terminal import compared_words

GREEDY = Sampling(3, 0.0, 42)


def probs(ids, logprobs):
    return [
        {"id": i, "token": f"t{i}", "bytes": [116], "logprob": lp, "top_logprobs": []}
        for i, lp in zip(ids, logprobs, strict=True)
    ]


def completion(ids=(5, 6, 7), logprobs=(-1.5, -0.25, -2.0), **extra):
    return {
        "index": 0,
        "content": "abc",
        "tokens": list(ids),
        "stop_type": "limit",
        "tokens_predicted": len(ids),
        "tokens_evaluated": 4,
        "timings": {"cache_n": 2},
        "completion_probabilities": probs(ids, logprobs),
        **extra,
    }


def llamacpp(**config) -> LlamaCppClient:
    cfg = ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol=Protocol.LLAMACPP, **config)
    return LlamaCppClient(cfg.endpoint_specs[0], cfg)


def test_a_completion_gives_token_ids_logprobs_and_the_cache_count():
    out = llamacpp()._parse(completion(), "w", GREEDY, 0)
    assert out.basis == Basis.TOKEN_IDS
    assert out.tokens == (5, 6, 7)
    assert out.logprobs == (-1.5, -0.25, -2.0)
    assert (out.finish_reason, out.cached_tokens, out.prompt_tokens) == ("length", 2, 4)
    assert out.cut_short is None


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (completion(tokens=None), "has no tokens list of integers (return_tokens was asked)"),
        (completion(completion_probabilities=None), "has no completion_probabilities list"),
        (
            completion(completion_probabilities=probs((5, 9, 7), (-1.0, -2.0, -3.0))),
            "has completion_probabilities (ids [5, 9, 7] (3)) that are not its tokens "
            "([5, 6, 7] (3)) with some left out",
        ),
        (completion(truncated=True), "the server truncated the prompt"),
        (completion(index=1), "has index 1 where 0 was due"),
        ({"error": {"code": 500}}, "is an error"),
    ],
)
def test_a_completion_that_breaks_the_protocol_cannot_be_tested(answer, words):
    with pytest.raises(ProtocolError, match=re.escape(words)):
        llamacpp()._parse(answer, "w", GREEDY, 0)


def test_a_token_llama_cpp_gave_no_entry_for_is_a_gap_not_a_fault():
    """llama-server leaves out the entry of a token that ends inside a UTF-8 character
    (measured: 31 entries for 32 tokens); its logprob is neither compared nor missing evidence."""
    answer = completion(completion_probabilities=probs((5, 7), (-1.0, -3.0)))
    out = llamacpp()._parse(answer, "w", GREEDY, 0)
    assert (out.logprobs, out.logprob_gaps) == ((-1.0, None, -3.0), (1,))
    evidence = Evidence()
    evidence.add(("p",), out, "sample")
    assert (evidence.tokens, evidence.logprobs, evidence.missing) == (3, 2, None)


def test_log_zero_and_null_logprobs_are_not_finite_evidence():
    """llama.cpp writes log(0) as the lowest float32 (its JSON has no -inf) and NaN as null."""
    out = llamacpp()._parse(completion(logprobs=(LOG_ZERO, None, -1.0)), "w", GREEDY, 0)
    assert out.logprobs is not None
    assert out.logprobs[0] == -math.inf and out.logprobs[1] is None


def test_an_early_stop_although_ignore_eos_was_asked_is_cut_short():
    out = llamacpp()._parse(completion(ids=(5,), logprobs=(-1.0,), stop_type="eos"), "w", GREEDY, 0)
    assert out.cut_short == "1 of 3 tokens, finish reason 'stop' although ignore_eos was asked"


def test_greedy_requests_ask_for_top_k_1_and_sampled_ones_for_top_p_alone():
    greedy = LlamaCppClient.body([(1, 2), (3,)], GREEDY, True)
    assert greedy["prompt"] == [[1, 2], [3]]
    assert (greedy["top_k"], greedy["seed"], greedy["cache_prompt"]) == (1, 42, True)
    assert greedy["return_tokens"] is True and greedy["n_probs"] == 1
    assert greedy["ignore_eos"] is True
    sampled = LlamaCppClient.body("x", Sampling(3, 0.8, None, 0.9), False)
    assert (sampled["top_k"], sampled["min_p"], sampled["top_p"]) == (0, 0.0, 0.9)
    assert "seed" not in sampled and sampled["cache_prompt"] is False
    with pytest.raises(ValueError, match="mixes text and token-id prompts"):
        LlamaCppClient.body(["x", (1,)], GREEDY, True)


def test_cache_prompt_is_llamacpp_only_and_the_plan_shows_what_is_sent():
    with pytest.raises(ConfigError, match="--cache-prompt: only the llamacpp protocol"):
        ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol="openai", cache_prompt=True)
    off = ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol="llamacpp", cache_prompt=False)
    line = describe_requests(off)
    assert line.startswith('requests: POST /completion {"prompt": "<prompt>"')
    assert '"cache_prompt": false' in line and '"n_probs": 1' in line


def openai() -> OpenAIClient:
    cfg = ValidatorConfig(endpoints=["http://127.0.0.1:1"], protocol=Protocol.OPENAI)
    return OpenAIClient(cfg.endpoint_specs[0], cfg)


def test_the_openai_protocol_reads_the_chat_shaped_logprobs_of_llama_server():
    """The finding of issue #28: llama-server's /v1/completions answers logprobs as
    `content: [{id, token, logprob}]`, and the validator compared text only."""
    choice = {
        "text": "abc",
        "index": 0,
        "finish_reason": "length",
        "logprobs": {"content": probs((5, 6, 7), (-1.5, -0.25, -2.0))},
    }
    out = openai()._parse(choice, "w", GREEDY)
    assert out.basis == Basis.TOKEN_IDS
    assert out.tokens == (5, 6, 7) and out.logprobs == (-1.5, -0.25, -2.0)


def test_a_token_llama_server_does_not_list_in_the_chat_shape_still_counts_and_its_text_is_compared():
    """Measured: 31 entries for 32 tokens with finish reason length; the entries spell the text."""
    content = [
        {"id": 1, "token": "a", "logprob": -1.0},
        {"id": 3, "token": "\u00e9b", "logprob": -2.0},
    ]
    choice = {"text": "a\u00e9b", "finish_reason": "length", "logprobs": {"content": content}}
    out = openai()._parse(choice, "w", GREEDY)
    assert (out.tokens, out.unlisted_tokens, out.completion_tokens, out.cut_short) == (
        (1, 3),
        1,
        3,
        None,
    )
    other = dataclasses.replace(out, text="a\u00e8b")
    assert describe_divergence(out, other) == "text differs at character 1: '\u00e9b' vs '\u00e8b'"
    short = {**choice, "text": "ab"}
    with pytest.raises(ProtocolError, match="stopped at the length limit after 2 of 3 tokens"):
        openai()._parse(short, "w", GREEDY)


def test_chat_shaped_logprobs_without_ids_are_compared_on_token_strings():
    content = [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -2.0}]
    choice = {"text": "ab", "finish_reason": "stop", "logprobs": {"content": content}}
    out = openai()._parse(choice, "w", GREEDY)
    assert (out.basis, out.tokens) == (Basis.TOKENS, ("a", "b"))


def test_chat_shaped_logprobs_with_ids_for_some_tokens_only_are_refused():
    content = [{"id": 1, "token": "a", "logprob": -1.0}, {"token": "b", "logprob": -2.0}]
    choice = {"text": "ab", "finish_reason": "stop", "logprobs": {"content": content}}
    with pytest.raises(ProtocolError, match=r"logprobs\.content that is not a list"):
        openai()._parse(choice, "w", GREEDY)


@pytest.mark.parametrize(
    ("counts", "words"),
    [
        ((0, 0, 5168), "5168 characters of text compared"),
        ((120, 120, None), "120 tokens and 120 logprobs compared"),
        ((120, 0, None), "120 tokens compared (no logprobs)"),
        ((0, 0, None), "0 tokens compared"),
    ],
)
def test_the_summary_line_names_what_was_compared(counts, words):
    assert compared_words(*counts) == words
