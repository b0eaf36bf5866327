"""`detinfer validate` against llama.cpp's real `llama-server` on loopback (issue #28).

The server is built from the llama.cpp that llama-cpp-python 0.3.36 vendors
(hack/build-llama-server.sh) and serves a seeded 2-layer random-weight llama with Llama 3's
tokenizer on the CPU. Each test asserts the verdict the real server gave when this was written,
with the reason; the verdicts are findings, not targets (docs/engines.md has the table).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.engines import suites, validate
from tests.support.llamacpp import LlamaServer


@pytest.fixture
def one_slot(llama_model: Path, tmp_path: Path):
    with LlamaServer(llama_model, parallel=1, log=tmp_path / "llama-server.log") as server:
        yield server


@pytest.fixture
def four_slots(llama_model: Path, tmp_path: Path):
    with LlamaServer(llama_model, parallel=4, log=tmp_path / "llama-server.log") as server:
        yield server


def test_one_slot_without_the_prompt_cache_is_deterministic(tmp_path, one_slot):
    """The guides' settings (seed, temperature 0, top-k 1, one slot) and cache_prompt off: every
    request is computed alone and from scratch, and gives the same bits each time."""
    code, report, output = validate(
        tmp_path,
        one_slot.url,
        "--protocol",
        "llamacpp",
        "--cache-prompt",
        "off",
        "--suites",
        "Single,Mixed,Prefix,Concurrent",
    )
    assert code == 0, output
    assert report["verdict"] == "Deterministic"
    assert report["comparedOn"] == "tokenIds+logprobs"
    ran = suites(report)
    for name in ("Single", "Mixed", "Prefix", "Concurrent"):
        assert ran[name]["outcome"] == "Passed" and ran[name]["uniqueOutputs"] == 1, ran[name]
        assert ran[name]["logprobsCompared"] > 0
    assert report["endpoints"][0]["server"]["props"]["total_slots"] == 1


def test_one_slot_with_the_prompt_cache_changes_logprobs_of_cached_prefixes(tmp_path, one_slot):
    """cache_prompt on (llama-server's default): the same prompt alone, repeated, passes (Single),
    but a prompt whose prefix comes from the cache gives other logprobs than computed from
    scratch, with the same tokens: a prefill that starts from the cache evaluates the rest in
    another batch shape (llama.cpp's server README warns that cached logits are not
    bit-identical). The first logprob that differs is usually output token 0's; a CI run of
    53ffb10 saw it at token 1 (-4.095100 vs -4.094397), so the test names no position."""
    code, report, output = validate(
        tmp_path, one_slot.url, "--protocol", "llamacpp", "--suites", "Single,Prefix,RadixCache"
    )
    assert code == 1, output
    assert report["verdict"] == "NotDeterministic"
    ran = suites(report)
    assert ran["Single"]["outcome"] == "Passed"
    assert ran["Prefix"]["outcome"] == "Failed"
    assert re.search(
        r"logprob of output token \d+ .*\(tokens identical\)", ran["Prefix"]["firstDivergence"]
    ), ran["Prefix"]["firstDivergence"]
    assert ran["RadixCache"]["outcome"] == "Failed"
    assert re.search(
        r"prefilled with \d+ cached tokens vs trial \d+, prefilled from scratch .*: logprob of "
        r"output token \d+",
        ran["RadixCache"]["firstDivergence"],
    ), ran["RadixCache"]["firstDivergence"]


def test_four_slots_change_logprobs_with_the_batch(tmp_path, four_slots):
    """Several slots decode their requests in one batch (continuous batching): the probe in a
    batch of 2 already gives other logprobs than alone (llama.cpp issue 7052 reports other
    texts at temperature 0 with several slots), with cache_prompt off as well."""
    code, report, output = validate(
        tmp_path,
        four_slots.url,
        "--protocol",
        "llamacpp",
        "--cache-prompt",
        "off",
        "--suites",
        "Single",
    )
    assert code == 1, output
    single = suites(report)["Single"]
    assert single["outcome"] == "Failed" and single["uniqueOutputs"] > 1
    assert re.match(
        r"batch of \d+, copy \d+ vs batch of 1, copy 1 \(the probe prompt\): logprob of output "
        r"token \d+",
        single["firstDivergence"],
    ), single["firstDivergence"]
    assert report["endpoints"][0]["server"]["props"]["total_slots"] == 4


def test_the_openai_protocol_compares_llama_servers_ids_and_logprobs(tmp_path, one_slot):
    """Issue #28's finding: llama-server's /v1/completions answers logprobs in the chat shape,
    which the openai protocol read as text only ("0 tokens and 0 logprobs compared")."""
    code, report, output = validate(
        tmp_path, one_slot.url, "--protocol", "openai", "--suites", "Single"
    )
    assert code == 0, output
    assert report["comparedOn"] == "tokenIds+logprobs"
    assert report["tokensCompared"] > 0 and report["logprobsCompared"] > 0
    assert (
        f"{report['tokensCompared']} tokens and {report['logprobsCompared']} logprobs compared"
        in output
    )


def test_the_chat_protocol_sees_the_prompt_cache_as_the_native_one_does(tmp_path, one_slot):
    """`--protocol openai-chat` (/v1/chat/completions, one prompt per request, so a batch is
    requests at once, queued by the one slot): llama-server adds token ids to the chat logprobs,
    so ids and logprobs are compared. Repeats of one prompt agree (Single); a prompt whose
    prefix is cached (cache_prompt is on by default) gives other logprobs from output token 0,
    as on /completion. The answers name one backend, llama.cpp's build (system_fingerprint)."""
    code, report, output = validate(
        tmp_path, one_slot.url, "--protocol", "openai-chat", "--suites", "Single,Prefix"
    )
    if code == 2 and "says it stopped at the length limit after 15 of 16 tokens" in output:
        # Seen once in CI (2026-12-08, front-workers branch): an answer whose prefix came from
        # the cache ended one token short of max_tokens with finish_reason "length", so the
        # validator could not compare it (exit 2: never a pass, never a failure). A finding
        # about llama-server's chat endpoint, not a verdict on its determinism.
        pytest.skip(f"llama-server ended a chat answer one token short: {report['reason']}")
    assert code == 1, output
    assert report["comparedOn"] == "tokenIds+logprobs"
    ran = suites(report)
    assert ran["Single"]["outcome"] == "Passed" and ran["Single"]["logprobsCompared"] > 0
    assert ran["Prefix"]["outcome"] == "Failed"
    assert re.search(
        r"logprob of output token \d+ .*\(tokens identical\)", ran["Prefix"]["firstDivergence"]
    ), ran["Prefix"]["firstDivergence"]
    (backend,) = report["endpoints"][0]["servedBy"]
    assert backend.startswith("b") and "backend" not in report["reason"]


def test_a_server_killed_mid_run_could_not_be_tested(tmp_path, llama_model):
    """Never a verdict from half a run: exit 2, CouldNotTest."""
    report = tmp_path / "report.json"
    with LlamaServer(llama_model, parallel=1) as server:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "detinfer.cli",
                "validate",
                "--endpoint",
                server.url,
                "--protocol",
                "llamacpp",
                "--suites",
                "Single",
                "--max-new-tokens",
                "64",
                "--report",
                str(report),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _slot_busy(server.url) is False:
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        output, _ = run.communicate(timeout=120)
    assert run.returncode == 2, output
    assert output.strip().splitlines()[-1].startswith("could not test: "), output
    assert json.loads(report.read_text())["verdict"] == "CouldNotTest"


def _slot_busy(url: str) -> bool | None:
    """Whether a slot is generating (GET /slots); None when the server does not answer."""
    try:
        slots = httpx.get(f"{url}/slots", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return any(isinstance(s, dict) and s.get("is_processing") for s in slots)
