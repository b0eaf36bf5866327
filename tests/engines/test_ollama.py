"""`detinfer validate` against Ollama's real `ollama serve` on loopback (issue #28).

Ollama 0.17.4 is built from its Go module with ggml's CPU backends (hack/build-ollama.sh) and
serves the seeded 2-layer random-weight llama of tests/engines/test_llamacpp.py, made into an
Ollama model by `ollama create` with the guides' settings (seed 42, temperature 0, top_k 1) in
its Modelfile; Ollama runs a llama-architecture GGUF with its llama.cpp runner. Each test
asserts the verdict the real server gave when this was written, with the reason; the verdicts
are findings, not targets (docs/engines.md has the table).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from detinfer.engines.ollama import MODEL_NAME, OLLAMA_VERSION
from tests.support.engines import suites
from tests.support.engines import validate as quick_validate
from tests.support.ollama import OllamaServer

PREFIX_RUNS = 3
"""Prefix runs on one slot until one diverges; measured, 13 of 16 runs diverged (below)."""


def validate(tmp_path: Path, url: str, *args: str) -> tuple[int, dict, str]:
    """The shared quick run, with batches up to 4 (Ollama's slots here; the last
    --max-batch-size given wins)."""
    return quick_validate(tmp_path, url, "--max-batch-size", "4", *args)


@pytest.fixture(scope="module")
def one_slot(ollama_model: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("ollama-1")
    with OllamaServer(ollama_model, work, parallel=1, log=work / "ollama.log") as server:
        yield server


@pytest.fixture(scope="module")
def four_slots(ollama_model: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("ollama-4")
    with OllamaServer(ollama_model, work, parallel=4, log=work / "ollama.log") as server:
        yield server


def test_the_real_api_answers_token_strings_and_logprobs_without_ids(one_slot):
    """The shapes `--protocol ollama` reads: POST /api/generate with `raw` and `stream` false
    answers one object with `response`, `done_reason`, `eval_count` and `logprobs` entries of
    `{token, logprob, bytes}`: token strings, no ids. `context` (token ids) comes only without
    `raw`, and raw with `context` is refused; a prompt cannot be token ids. No /health: GET
    /api/version says the server is up."""
    url = one_slot.url
    assert httpx.get(f"{url}/health").status_code == 404
    assert httpx.get(f"{url}/api/version").json() == {"version": OLLAMA_VERSION}
    options = {"seed": 42, "temperature": 0, "top_k": 1, "num_predict": 4}
    body = {"model": MODEL_NAME, "prompt": "The capital of France is", "options": options}
    raw = httpx.post(
        f"{url}/api/generate", json={**body, "raw": True, "stream": False, "logprobs": True}
    ).json()
    assert raw["done"] is True and raw["done_reason"] == "length" and raw["eval_count"] == 4
    assert "context" not in raw
    entries = raw["logprobs"]
    assert [sorted(e) for e in entries] == [["bytes", "logprob", "token"]] * 4
    assert "".join(e["token"] for e in entries) == raw["response"]
    templated = httpx.post(f"{url}/api/generate", json={**body, "stream": False}).json()
    assert templated["response"] == raw["response"] and len(templated["context"]) > 4
    refused = httpx.post(
        f"{url}/api/generate", json={**body, "raw": True, "stream": False, "context": [1]}
    )
    assert refused.status_code == 400
    ids = httpx.post(f"{url}/api/generate", json={**body, "prompt": [791, 6864], "stream": False})
    assert ids.status_code == 400 and "cannot unmarshal array" in ids.json()["error"]


def test_one_slot_repeats_a_prompt_alone_and_among_others(tmp_path, one_slot):
    """The guides' settings and one slot (OLLAMA_NUM_PARALLEL=1: requests wait their turn): the
    probe repeated at every batch size, and among other prompts sent at once, gives the same
    token strings and logprobs each time."""
    code, report, output = validate(
        tmp_path, one_slot.url, "--protocol", "ollama", "--suites", "Single,Concurrent"
    )
    assert code == 0, output
    assert report["verdict"] == "Deterministic"
    assert report["comparedOn"] == "tokens+logprobs"
    ran = suites(report)
    for name in ("Single", "Concurrent"):
        assert ran[name]["outcome"] == "Passed" and ran[name]["uniqueOutputs"] == 1, ran[name]
        assert ran[name]["logprobsCompared"] > 0
    assert report["endpoints"][0]["server"]["version"] == OLLAMA_VERSION


def test_one_slot_prompt_cache_changes_logprobs_of_prompts_sharing_a_prefix(tmp_path, one_slot):
    """One slot still reuses its KV cache for the prefix a prompt shares with the slot's last
    one (always on: the runner's LoadCacheSlot is called with cachePrompt true, and no request
    field turns it off), and evaluates the rest, or only the last prompt token when all of it
    is cached, in another batch shape: the same prompt gives another logprob from output token
    0 on, with the same tokens (measured: `prefix batch 2 (2 prompts), slot 1 vs prefix batch 1
    (alone) (the run's nonce and the long text's first 1 characters): logprob of output token
    0`). Which prefix is cached depends on the order the slot takes concurrent requests in, and
    on a 128-wide model a changed sum often rounds to the same float: 13 of 16 runs of Prefix
    diverged here, so up to PREFIX_RUNS runs, each with a new nonce, until one does."""
    for _ in range(PREFIX_RUNS):
        code, report, output = validate(
            tmp_path, one_slot.url, "--protocol", "ollama", "--suites", "Prefix"
        )
        if code != 0:
            break
    assert code == 1, output
    assert report["verdict"] == "NotDeterministic"
    prefix = suites(report)["Prefix"]
    assert prefix["outcome"] == "Failed" and prefix["uniqueOutputs"] == 2
    assert re.search(
        r"logprob of output token \d+ \(token .*\): \S+ vs \S+ \(tokens identical\)",
        prefix["firstDivergence"],
    ), prefix["firstDivergence"]


def test_four_slots_change_logprobs_and_seeded_samples_with_the_batch(tmp_path, four_slots):
    """OLLAMA_NUM_PARALLEL=4: requests sent at once decode together in one batch. The probe in
    a batch of 2 already gives other logprobs than alone (measured: output token 2, tokens
    identical), and seeded sampling (temperature 0.8, top_p 0.9, seed 42) picks another token
    at output token 2 in a batch of 2 than alone."""
    code, report, output = validate(
        tmp_path, four_slots.url, "--protocol", "ollama", "--suites", "Single,Sampling"
    )
    assert code == 1, output
    assert report["verdict"] == "NotDeterministic"
    ran = suites(report)
    single, sampling = ran["Single"], ran["Sampling"]
    assert single["outcome"] == "Failed" and single["uniqueOutputs"] > 1
    assert re.match(
        r"batch of \d+, copy \d+ vs batch of 1, copy 1 \(the probe prompt\): logprob of output "
        r"token \d+ \(token .*\(tokens identical\)",
        single["firstDivergence"],
    ), single["firstDivergence"]
    assert sampling["outcome"] == "Failed"
    assert re.match(
        r"sampling_seed 42, batch of \d+, copy \d+ vs sampling_seed 42, batch of 1, copy 1 "
        r"\(the probe prompt\): output token \d+: token ",
        sampling["firstDivergence"],
    ), sampling["firstDivergence"]


def test_the_openai_protocol_could_not_test_ollamas_completions(tmp_path, one_slot):
    """`--protocol openai` sends a batch as a list of prompts; Ollama's /v1/completions takes
    one string and answers HTTP 400 (and no logprobs even for one prompt): exit 2."""
    code, report, output = validate(
        tmp_path, one_slot.url, "--protocol", "openai", "--suites", "Single"
    )
    assert code == 2, output
    assert report["verdict"] == "CouldNotTest"
    assert "POST /v1/completions answered HTTP 400" in report["reason"]
    assert "cannot unmarshal array" in report["reason"]
