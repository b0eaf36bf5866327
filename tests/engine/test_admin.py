"""The attack of issue #27 on real servers on loopback: a client that reaches the admin endpoints
changes a pod's outputs (new weights, a LoRA adapter) unless a key protects them, as on SGLang.

Engines run in deterministic mode, so an output changes only when the weights do (never because
of the batch or the prefix cache), and a few tokens of the tiny model are enough.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from tests.support.engines import EngineProcess

PROMPT = "Tell me about Richard Feynman: "
GREEDY = {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}
ADMIN_KEY, API_KEY = "admin-secret", "api-secret"
NEW_WEIGHTS = {"model_path": "tiny@seed=7", "weight_version": "attacker-v1"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def greedy(url: str, headers: dict[str, str] | None = None, **more) -> list[int]:
    body = {"text": PROMPT, "sampling_params": GREEDY, **more}
    r = httpx.post(f"{url}/generate", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["output_ids"]


def post(url: str, path: str, body: dict, headers: dict[str, str] | None = None):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=60)


def test_without_keys_the_attack_changes_the_outputs():
    with EngineProcess(seed=3, deterministic=True) as engine:
        before = greedy(engine.url)
        r = post(engine.url, "/update_weights_from_disk", NEW_WEIGHTS)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "success": True,
            "message": "Succeeded to update model weights. Weight version updated to attacker-v1.",
            "num_paused_requests": 0,
        }
        assert greedy(engine.url) != before
        info = httpx.get(f"{engine.url}/model_info").json()
        assert (info["model_path"], info["weight_version"]) == ("tiny@seed=7", "attacker-v1")


def test_new_weights_are_the_seed_s_own_and_the_old_ones_come_back():
    """`tiny@seed=7` is what an engine started with --random-seed 7 serves; `tiny` is the
    engine's own --random-seed weights again."""
    with EngineProcess(seed=7, deterministic=True) as seven:
        expected = greedy(seven.url)
    with EngineProcess(seed=3, deterministic=True) as engine:
        own = greedy(engine.url)
        assert post(engine.url, "/update_weights_from_disk", NEW_WEIGHTS).status_code == 200
        assert greedy(engine.url) == expected
        assert post(engine.url, "/update_weights_from_disk", {"model_path": "tiny"}).is_success
        assert greedy(engine.url) == own
        version = httpx.get(f"{engine.url}/model_info").json()["weight_version"]
        assert version == "attacker-v1"  # an update without weight_version keeps the version


def test_an_admin_key_stops_the_attack():
    with EngineProcess("--admin-api-key", ADMIN_KEY, seed=3, deterministic=True) as engine:
        before = greedy(engine.url)  # normal endpoints stay open with only an admin key
        for headers in (None, bearer("wrong"), bearer(API_KEY), {"x-api-key": ADMIN_KEY}):
            r = post(engine.url, "/update_weights_from_disk", NEW_WEIGHTS, headers)
            assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"}), headers
        assert greedy(engine.url) == before
        assert httpx.get(f"{engine.url}/model_info").json()["weight_version"] == "default"

        r = post(engine.url, "/update_weights_from_disk", NEW_WEIGHTS, bearer(ADMIN_KEY))
        assert r.status_code == 200, r.text
        assert greedy(engine.url) != before
        assert httpx.get(f"{engine.url}/model_info").json()["weight_version"] == "attacker-v1"


def test_server_info_gives_the_keys_away_as_sglang_does():
    """SGLang 0.5.23's /server_info (level NORMAL) answers its resolved arguments and the launch
    command unredacted: with only an admin key set, anyone can read it there."""
    args = ("--admin-api-key", ADMIN_KEY, "--weight-version", "v7")
    with EngineProcess(*args, seed=3) as engine:
        info = httpx.get(f"{engine.url}/server_info").json()
        assert (info["admin_api_key"], info["api_key"]) == (ADMIN_KEY, None)
        assert f"--admin-api-key {ADMIN_KEY}" in info["launch_command"]
        assert info["weight_version"] == "v7"
        r = post(engine.url, "/update_weight_version", {"new_version": "v8"}, bearer(ADMIN_KEY))
        assert r.json() == {
            "success": True,
            "message": "Weight version updated to v8",
            "new_version": "v8",
        }
        assert httpx.get(f"{engine.url}/model_info").json()["weight_version"] == "v8"
        # /server_info keeps the start-up value, as SGLang's does.
        assert httpx.get(f"{engine.url}/server_info").json()["weight_version"] == "v7"


def test_an_api_key_guards_every_endpoint_but_health_and_metrics():
    with EngineProcess("--api-key", API_KEY, "--enable-metrics", seed=3) as engine:
        url = engine.url
        body = {"text": PROMPT, "sampling_params": GREEDY}
        for headers in (None, bearer("wrong"), {"x-api-key": API_KEY}):
            assert post(url, "/generate", body, headers).status_code == 401, headers
        assert httpx.get(f"{url}/server_info").status_code == 401
        assert post(url, "/generate", body, bearer(API_KEY)).status_code == 200
        for path in ("/health", "/health_generate", "/metrics"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
        # Without an admin key, the admin endpoints take the API key.
        assert post(url, "/update_weight_version", {"new_version": "v2"}).status_code == 401
        r = post(url, "/update_weight_version", {"new_version": "v2"}, bearer(API_KEY))
        assert r.status_code == 200, r.text


def test_defaults_keep_every_endpoint_open():
    with EngineProcess(seed=3) as engine:
        url = engine.url
        info = httpx.get(f"{url}/server_info").json()
        assert (info["api_key"], info["admin_api_key"], info["enable_lora"]) == (None, None, False)
        assert httpx.get(f"{url}/model_info").json()["weight_version"] == "default"
        out = httpx.post(f"{url}/generate", json={"text": PROMPT, "sampling_params": GREEDY})
        assert out.json()["meta_info"]["weight_version"] == "default"
        assert post(url, "/flush_cache", {}).status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 200
        # LoRA is off by default, as in SGLang: refused with its message.
        r = post(url, "/load_lora_adapter", {"lora_name": "a", "lora_path": "/adapters/a"})
        assert r.status_code == 400
        assert r.json()["error_message"].startswith("LoRA is not enabled.")


def test_a_lora_adapter_changes_only_the_requests_that_name_it():
    with EngineProcess("--enable-lora", seed=3, deterministic=True) as engine:
        url = engine.url
        base = greedy(url)
        r = post(url, "/load_lora_adapter", {"lora_name": "evil", "lora_path": "/adapters/evil"})
        assert r.json() == {
            "success": True,
            "error_message": "",
            "loaded_adapters": {"evil": "/adapters/evil"},
        }
        adapted = greedy(url, lora_path="evil")
        assert adapted != base
        # The base model's KV of the prompt, cached by now, is not the adapter's.
        assert post(url, "/flush_cache", {}).status_code == 200
        assert greedy(url, lora_path="evil") == adapted
        # In one batch: the adapter's prompt changes, the other does not.
        batch = httpx.post(
            f"{url}/generate",
            json={"text": [PROMPT, PROMPT], "sampling_params": GREEDY, "lora_path": ["evil", None]},
            timeout=60,
        ).json()
        assert [o["output_ids"] for o in batch] == [adapted, base]
        r = post(url, "/generate", {"text": PROMPT, "lora_path": "unknown"})
        assert r.status_code == 400
        assert "never been loaded: unknown" in r.json()["error"]["message"]
        # As in SGLang 0.5.23, unloading does not stop a request naming the adapter: it is
        # loaded again from the path it had.
        assert post(url, "/unload_lora_adapter", {"lora_name": "evil"}).json()["success"]
        assert greedy(url, lora_path="evil") == adapted


def test_a_weight_swap_waits_for_running_requests_and_holds_new_ones():
    """Requests running when the update comes finish on the old weights; requests that arrive
    while it waits run on the new ones (SGLang's model-update lock)."""
    long = {**GREEDY, "max_new_tokens": 400}
    with EngineProcess(seed=3, deterministic=True) as engine:
        url = engine.url
        old_long, old_short = greedy(url, sampling_params=long), greedy(url)

        async def attack_while_running() -> tuple[list[int], list[int], int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:

                async def generate(params: dict) -> list[int]:
                    body = {"text": PROMPT, "sampling_params": params}
                    return (await client.post("/generate", json=body)).json()["output_ids"]

                running = asyncio.create_task(generate(long))
                while not (await client.get("/server_info")).json()["num_running_reqs"]:
                    await asyncio.sleep(0.01)
                update = asyncio.create_task(
                    client.post("/update_weights_from_disk", json=NEW_WEIGHTS)
                )
                await asyncio.sleep(0.5)  # the update is waiting for the running request
                assert not running.done()
                short = await generate(GREEDY)
                return await running, short, (await update).status_code

        running, short, status = asyncio.run(attack_while_running())
        assert status == 200
        assert running == old_long
        assert short != old_short
        assert short == greedy(url)
