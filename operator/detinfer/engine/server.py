"""The HTTP API: the subset of SGLang's that detinfer uses, plus OpenAI-style completions.

Handlers run on asyncio; the model runs on the engine's thread. Events come back through
`call_soon_threadsafe`. A client that goes away cancels its handler (aiohttp's handler
cancellation), which aborts its requests and frees their slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detinfer import __version__
from detinfer.engine import admin, protocol
from detinfer.engine.auth import AuthLevel, Handler, auth_middleware
from detinfer.engine.keys import ENGINE_KEY, LAUNCH_COMMAND_KEY, LORAS_KEY
from detinfer.engine.lora import LoraAdapter, LoraRegistry
from detinfer.engine.sampling import SamplingParams
from detinfer.engine.scheduler import Engine, Event, Overloaded, Request, ShuttingDown
from detinfer.engine.tokenizer import BOS, decode, token_text

log = logging.getLogger("detinfer.engine")
HEALTH_TIMEOUT_SECONDS = 20.0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


async def _body(request: web.Request) -> Any:
    return protocol.parse_body(await request.read())


class EngineFailed(RuntimeError):
    """The engine failed a request (answered 500)."""


class _Tracker:
    """Requests of one HTTP call and the queue their events arrive on."""

    def __init__(
        self,
        engine: Engine,
        prompts: list[protocol.Prompt],
        streaming: bool = False,
        adapters: list[LoraAdapter | None] | None = None,
        route: str = "generate",
    ):
        loop = asyncio.get_running_loop()
        self.engine = engine
        self.events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(self.events.put_nowait, event)

        self.requests = [
            Request(
                prompt=p.ids,
                params=p.params,
                emit=emit,
                seed=p.seed,
                return_logprob=p.return_logprob,
                logprob_start_len=p.logprob_start_len,
                streaming=streaming,
                lora=adapter,
                route=route,
            )
            for p, adapter in zip(prompts, adapters or [None] * len(prompts), strict=True)
        ]

    def submit(self) -> None:
        self.engine.submit(self.requests)

    async def finished(self) -> None:
        pending = set(self.requests)
        while pending:
            event = await self.events.get()
            if event.kind == "error":
                raise EngineFailed(event.message)
            if event.kind == "finish":
                pending.discard(event.request)

    def abort_unfinished(self) -> None:
        for r in self.requests:
            if not r.done:
                self.engine.abort(r)


@contextlib.asynccontextmanager
async def _tracked(
    engine: Engine,
    prompts: list[protocol.Prompt],
    streaming: bool = False,
    adapters: list[LoraAdapter | None] | None = None,
    route: str = "generate",
) -> AsyncIterator[_Tracker]:
    """Submit the prompts together; whatever happens to the handler (the client left, an error),
    requests still running are aborted so their slots are freed."""
    tracker = _Tracker(engine, prompts, streaming, adapters, route)
    tracker.submit()
    try:
        yield tracker
    finally:
        tracker.abort_unfinished()


def generate_result(r: Request, upto: int | None = None) -> dict[str, Any]:
    """SGLang's answer for one prompt; `upto` output tokens while it streams."""
    done = upto is None
    output = r.output if done else r.output[:upto]
    meta: dict[str, Any] = {
        "id": r.rid,
        "finish_reason": r.finish_reason if done else None,
        "prompt_tokens": len(r.prompt),
        "completion_tokens": len(output),
        "cached_tokens": r.cached_tokens,
        "weight_version": r.weight_version,
        "e2e_latency": round((r.finished_at or time.monotonic()) - r.created, 6),
    }
    if r.return_logprob:
        meta["output_token_logprobs"] = [
            [lp, t, None] for lp, t in zip(r.output_logprobs[: len(output)], output, strict=True)
        ]
        start = max(r.logprob_start_len, 0)
        meta["input_token_logprobs"] = (
            [[lp, t, None] for lp, t in zip(r.input_logprobs, r.prompt[start:], strict=True)]
            if r.logprob_start_len >= 0
            else []
        )
    return {"text": decode(output), "output_ids": list(output), "meta_info": meta}


def _adapters(registry: LoraRegistry, prompts: list[protocol.Prompt]) -> list[LoraAdapter | None]:
    try:
        return [registry.resolve(p.lora_path) for p in prompts]
    except ValueError as exc:
        raise protocol.BadRequest(str(exc)) from None


async def generate(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    prompts, batched, stream = protocol.generate_prompts(await _body(request), engine.model.config)
    adapters = _adapters(request.app[LORAS_KEY], prompts)
    async with _tracked(engine, prompts, stream, adapters) as tracker:
        if stream:
            return await _stream(request, tracker)
        await tracker.finished()
        results = [generate_result(r) for r in tracker.requests]
        return web.json_response(results if batched else results[0])


async def _stream(request: web.Request, tracker: _Tracker) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    r = tracker.requests[0]
    while True:
        event = await tracker.events.get()
        if event.kind == "error":
            payload = {"error": {"message": event.message, "code": 500}}
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())
            break
        if event.kind == "finish":
            await response.write(f"data: {json.dumps(generate_result(r))}\n\n".encode())
            break
        chunk = generate_result(r, upto=event.tokens)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    prompts, logprobs = protocol.completion_prompts(await _body(request), engine.model.config)
    async with _tracked(engine, prompts, route="openai") as tracker:
        await tracker.finished()
    choices = []
    for i, r in enumerate(tracker.requests):
        choice: dict[str, Any] = {
            "index": i,
            "text": decode(r.output),
            "logprobs": None,
            "finish_reason": r.finish_reason["type"] if r.finish_reason else None,
        }
        if logprobs is not None:
            texts = [token_text(t) for t in r.output]
            offsets = [sum(len(t) for t in texts[:j]) for j in range(len(texts))]
            choice["logprobs"] = {
                "tokens": texts,
                "token_logprobs": list(r.output_logprobs),
                "top_logprobs": None,
                "text_offset": offsets,
            }
        choices.append(choice)
    prompt_tokens = sum(len(r.prompt) for r in tracker.requests)
    completion_tokens = sum(len(r.output) for r in tracker.requests)
    return web.json_response(
        {
            "id": f"cmpl-{tracker.requests[0].rid}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": engine.served.served_model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def health_generate(request: web.Request) -> web.Response:
    """Generates one token, as SGLang's does: the model really runs."""
    engine = request.app[ENGINE_KEY]
    prompt = protocol.Prompt([BOS], SamplingParams(temperature=0.0, max_new_tokens=1), 0, False, -1)
    try:
        async with _tracked(engine, [prompt]) as tracker:
            await asyncio.wait_for(tracker.finished(), HEALTH_TIMEOUT_SECONDS)
    except (Overloaded, ShuttingDown, EngineFailed, TimeoutError) as exc:
        return _error(503, f"unhealthy: {str(exc) or 'no token within the timeout'}")
    return web.Response(text="")


async def flush_cache(request: web.Request) -> web.Response:
    # As SGLang 0.5.23 does (Scheduler.flush_cache): refused with 400 while any request runs
    # or waits, so that clients meet the same refusal here as on a serving SGLang pod.
    if not request.app[ENGINE_KEY].flush_cache():
        running, queued = request.app[ENGINE_KEY].queue_depth
        return web.Response(
            status=400,
            text=f"Cache not flushed because there are pending requests. "
            f"#queue-req: {queued}, #running-req: {running}\n",
        )
    return web.Response(text="Cache flushed.\n")


async def model_info(request: web.Request) -> web.Response:
    """SGLang's /model_info fields (0.5.23's http_server.py), then the reference's own. A weight
    update moves model_path, served_model_name and weight_version here, not in /server_info."""
    engine = request.app[ENGINE_KEY]
    args, config, served = engine.args, engine.model.config, engine.served
    return web.json_response(
        {
            "model_path": served.model_path,
            "served_model_name": served.served_model_name,
            "tokenizer_path": "byte-level",
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": served.weight_version,
            "model_type": "detinfer-reference",
            "architectures": ["DetinferReferenceForCausalLM"],
            "revision": args.revision,
            "context_length": config.context_length,
            "vocab_size": config.vocab_size,
            "parameters": config.parameters(),
            "random_seed": args.random_seed,
            "dtype": args.dtype,
        }
    )


async def server_info(request: web.Request) -> web.Response:
    """Like SGLang 0.5.23's /server_info: the resolved server arguments at the top level
    (attention_backend, enable_deterministic_inference, disable_radix_cache, tp_size, ...),
    `launch_command` and `version`, then the live state.

    Secrets included, on purpose: SGLang 0.5.23 answers `ServerArgs.resolved_dict()` here
    (build_server_info in python/sglang/srt/utils/common.py), which redacts only the watermark
    fields (python/sglang/srt/server_args.py, sampling/watermarking/core.py), so `api_key` and
    `admin_api_key` come back in plain text, and in `launch_command` too, to anyone who may call
    this NORMAL-level endpoint: with only --admin-api-key set, to everyone. The reference engine
    answers the same, so an attack played on it finds what it would find on SGLang."""
    engine = request.app[ENGINE_KEY]
    running, queued = engine.queue_depth
    return web.json_response(
        {
            **asdict(engine.args),
            "launch_command": request.app[LAUNCH_COMMAND_KEY],
            # --attention-backend (config.ATTENTION_BACKENDS): the engine's own attentions,
            # none of SGLang's backends.
            "attention_backend": engine.args.attention_backend,
            "prefill_attention_backend": None,
            "decode_attention_backend": None,
            "tp_size": 1,
            "pp_size": 1,
            "dp_size": 1,
            "version": f"detinfer-reference-{__version__}",
            "engine": "detinfer-reference",
            "kernels": engine.model.kernels.name,
            "sampling_backend": "pytorch",
            "num_running_reqs": running,
            "num_queue_reqs": queued,
        }
    )


async def models(request: web.Request) -> web.Response:
    """The served model, then the loaded LoRA adapters with it as their parent (as SGLang)."""
    served = request.app[ENGINE_KEY].served
    registry = request.app[LORAS_KEY]
    base = {
        "id": served.served_model_name,
        "object": "model",
        "owned_by": "detinfer",
        "root": served.served_model_name,
    }
    adapters = [
        {
            "id": name,
            "object": "model",
            "owned_by": "detinfer",
            "root": path,
            "parent": served.served_model_name,
        }
        for name, path in registry.paths().items()
    ]
    return web.json_response({"object": "list", "data": [base, *adapters]})


def metrics_handler(registry):
    async def handler(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


@web.middleware
async def errors(request: web.Request, handler):
    """Whatever goes wrong, the answer is JSON and the server keeps serving."""
    try:
        return await handler(request)
    except protocol.BadRequest as exc:
        return _error(400, str(exc))
    except (Overloaded, ShuttingDown) as exc:
        return _error(503, f"overloaded: {exc}")
    except EngineFailed as exc:
        return _error(500, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise
    except Exception as exc:
        log.exception("handler failed")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


NORMAL, ADMIN_OPTIONAL = AuthLevel.NORMAL, AuthLevel.ADMIN_OPTIONAL
ROUTES: tuple[tuple[str, str, Handler, AuthLevel], ...] = (
    # Each route at the level SGLang 0.5.23 gives it (@auth_level in http_server.py; no
    # decorator: NORMAL); tests/engine/test_auth.py reads them from there and compares.
    ("POST", "/generate", generate, NORMAL),
    ("POST", "/v1/completions", completions, NORMAL),
    ("GET", "/v1/models", models, NORMAL),
    ("GET", "/health", health, NORMAL),
    ("GET", "/health_generate", health_generate, NORMAL),
    ("POST", "/flush_cache", flush_cache, ADMIN_OPTIONAL),
    ("GET", "/flush_cache", flush_cache, ADMIN_OPTIONAL),
    # SGLang 0.5.23 names them /model_info and /server_info; the /get_* names are its
    # deprecated aliases, which older validators and clients still ask for.
    ("GET", "/model_info", model_info, NORMAL),
    ("GET", "/get_model_info", model_info, NORMAL),
    ("GET", "/server_info", server_info, NORMAL),
    ("GET", "/get_server_info", server_info, NORMAL),
    ("POST", "/update_weights_from_disk", admin.update_weights_from_disk, ADMIN_OPTIONAL),
    ("POST", "/update_weight_version", admin.update_weight_version, ADMIN_OPTIONAL),
    ("POST", "/load_lora_adapter", admin.load_lora_adapter, ADMIN_OPTIONAL),
    ("POST", "/unload_lora_adapter", admin.unload_lora_adapter, ADMIN_OPTIONAL),
)


def build_app(engine: Engine, metrics=None, launch_command: str = "") -> web.Application:
    """The server; `launch_command` is the engine's arguments as given (/server_info)."""
    args = engine.args
    levels = {handler: level for _, _, handler, level in ROUTES}
    auth = auth_middleware(args.api_key, args.admin_api_key, levels)
    app = web.Application(middlewares=[auth, errors], client_max_size=16 * 1024 * 1024)
    app[ENGINE_KEY] = engine
    app[LORAS_KEY] = LoraRegistry(
        args.enable_lora, engine.model.config, engine.model.device, engine.model.dtype
    )
    app[LAUNCH_COMMAND_KEY] = launch_command
    for method, path, handler, _ in ROUTES:
        if method == "GET":  # and HEAD, as SGLang's GET routes answer it
            app.router.add_get(path, handler)
        else:
            app.router.add_route(method, path, handler)
    if metrics is not None:  # NORMAL, and open whatever the keys (a /metrics path)
        app.router.add_get("/metrics", metrics_handler(metrics.registry))

    async def stop_engine(app: web.Application) -> None:
        engine.stop()

    app.on_cleanup.append(stop_engine)
    return app
