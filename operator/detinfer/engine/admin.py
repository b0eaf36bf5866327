"""SGLang's admin endpoints that change what the engine answers: weight updates and LoRA adapters.

Paths, bodies and answers are SGLang 0.5.23's (python/sglang/srt/entrypoints/http_server.py,
managers/io_struct.py); so is their auth level, ADMIN_OPTIONAL (server.py's route table). They
exist so that an attack can be played on the reference engine: a client that reaches them changes
a validated pod's outputs behind the verdict unless a key protects them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from detinfer.engine import protocol
from detinfer.engine.config import ModelConfig, weights_of
from detinfer.engine.keys import ENGINE_KEY, LORAS_KEY
from detinfer.engine.lora import LoraRegistry
from detinfer.engine.model import Transformer
from detinfer.engine.scheduler import Engine


async def _body(request: web.Request) -> Any:
    return protocol.parse_body(await request.read())


def _weights_answer(success: bool, message: str) -> web.Response:
    """UpdateWeightFromDiskReqOutput; 400 when it failed, as SGLang answers."""
    body = {"success": success, "message": message, "num_paused_requests": 0}
    return web.json_response(body, status=200 if success else 400)


def _new_model(engine: Engine, config: ModelConfig, seed: int) -> Transformer:
    args = engine.args
    return Transformer(config, seed, engine.model.kernels, device=args.device, dtype=args.dtype)


async def update_weights_from_disk(request: web.Request) -> web.Response:
    """Load the weights `model_path` names (`tiny@seed=7`: config.weights_of) and serve them from
    the next moment no request runs: requests already running finish on the old weights, later
    ones wait and run on the new (Engine.when_idle). The model is built off the event loop and
    off the engine's thread, so serving goes on while it loads."""
    engine = request.app[ENGINE_KEY]
    update = protocol.update_weights_request(await _body(request))
    try:
        config, seed = weights_of(update.model_path, engine.args.random_seed)
    except ValueError as exc:
        return _weights_answer(False, f"Failed to get model loader: {exc}")
    if config != engine.model.config:
        return _weights_answer(
            False,
            f"Failed to update weights: {update.model_path!r} is the {config.name} model and the "
            f"engine serves {engine.model.config.name}; an update keeps the architecture.",
        )
    model = await asyncio.to_thread(_new_model, engine, config, seed)
    if update.abort_all_requests:
        engine.abort_all()
    swapped = engine.replace_weights(model, update.model_path, update.weight_version)
    await asyncio.wrap_future(swapped)
    message = "Succeeded to update model weights."
    if update.weight_version is not None:
        message += f" Weight version updated to {update.weight_version}."
    return _weights_answer(True, message)


async def update_weight_version(request: web.Request) -> web.Response:
    """Only the reported version changes (SGLang's words: it "doesn't affect model weights");
    requests submitted so far are aborted first unless abort_all_requests is false."""
    engine = request.app[ENGINE_KEY]
    version, abort_all = protocol.weight_version_request(await _body(request))
    if abort_all:
        engine.abort_all()
    engine.set_weight_version(version)
    return web.json_response(
        {
            "success": True,
            "message": f"Weight version updated to {version}",
            "new_version": version,
        }
    )


def _lora_answer(registry: LoraRegistry, error: str | None = None) -> web.Response:
    """LoRAUpdateOutput; 400 when it failed, as SGLang answers."""
    body = {
        "success": error is None,
        "error_message": error or "",
        "loaded_adapters": registry.paths() if error is None else None,
    }
    return web.json_response(body, status=400 if error else 200)


async def load_lora_adapter(request: web.Request) -> web.Response:
    name, path = protocol.load_lora_request(await _body(request))
    registry = request.app[LORAS_KEY]
    try:
        registry.load(name, path)
    except ValueError as exc:
        return _lora_answer(registry, str(exc))
    return _lora_answer(registry)


async def unload_lora_adapter(request: web.Request) -> web.Response:
    name = protocol.unload_lora_request(await _body(request))
    registry = request.app[LORAS_KEY]
    try:
        registry.unload(name)
    except ValueError as exc:
        return _lora_answer(registry, str(exc))
    return _lora_answer(registry)
