"""A scripted engine for the validator's tests: a real HTTP server on 127.0.0.1, in a thread.

It speaks the subset of SGLang's API the validator uses, OpenAI's /v1/completions and
/v1/chat/completions, Ollama's /api/generate, Anthropic's /v1/messages and Gemini's
generateContent (the shapes of their public API references). Its
"model" is a hash: the output tokens and logprobs of a prompt are a function of the prompt and
`model_seed` only, so it is deterministic unless a `variance` makes some outputs depend on the
batch, the concurrency or the cache, or a `fault` makes it misbehave. With `api_key` it
answers 401 as SGLang's --api-key does; `swap_model_info` plays a weight update mid-run.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VARIANCES = (
    "batch-logprob",  # a batch of more than 8: the last bit of output token 0's logprob flips
    "batch-token",  # a batch of 9 or more: output token 5 changes
    "logprob-then-token",  # a batch of 9 or more: logprob of token 0 flips, token 20 changes
    "batch-eos",  # a batch of 9 or more: stops after 10 tokens (finish reason stop)
    "concurrent",  # another request in flight: the last bit of token 0's logprob flips
    "radix",  # a cached prefix of 2 tokens or more: prompt and output logprobs flip their last
    # bit (one shared first token is the chance match of a never-seen sequence's random
    # marker with the cache, 1 in 255: the validator's RadixCache notes it, and it made
    # test_a_cache_that_changes_logprobs_fails_radix_cache flaky when it flipped too)
    "mixed",  # prompts of different lengths in one batch: logprob of token 0 flips
    "sampled-batch",  # temperature > 0 in a batch of more than 8: logprob of token 0 flips
    "unseeded",  # temperature > 0 without a seed: each sample is new (SGLang's default mode)
    "greedy-only",  # temperature ignored: every request greedy (transformers serve's continuous
    # batching after a greedy first request, measured in issue #28)
    "prefill-decode",  # a prefill of tokens the engine generated gives them another logprob
)
DEFAULT_SAMPLING_SEED = 42
"""What a request without a seed samples with (as SGLang in deterministic mode)."""
FAULTS = (
    "http500",
    "garbage",
    "truncated",
    "short-list",  # a list of n - 1 outputs for a batch of n
    "short-logprobs",  # one output_token_logprob fewer than output_ids
    "extra-tokens",  # one token more than max_new_tokens
    "hang",  # answers /generate only after `hang_seconds`
    "flush-400",  # /flush_cache refuses (as SGLang does while requests run or wait)
    "health-503",  # /health never becomes ready
    "no-meta",  # an output without meta_info
    "abort",  # SGLang gave up on the sequences after 3 tokens (finish reason abort)
    "error-200",  # HTTP 200 with an error object
    "empty-stop",  # no output tokens, finish reason stop
    "empty-null",  # no output tokens, finish reason null
    "one-token",  # one output token where more were asked, finish reason stop
    "nan-logprobs",  # every output logprob is NaN
    "inf-logprobs",  # every output logprob is -inf
    "constant-logprobs",  # every output logprob is -0.5
    "redirect",  # a well-formed answer, but with HTTP 302 and a Location
)


SGLANG_SERVER_INFO: dict[str, Any] = {
    "version": "fake-0.1",
    "attention_backend": "fa3",
    "enable_deterministic_inference": True,
    "disable_radix_cache": False,
    "tp_size": 1,
    "context_length": 8192,
}
"""A deterministic SGLang's /server_info, the fields the validator reads."""
OPEN_PATHS = ("/health", "/health_generate", "/ready", "/metrics")
"""What SGLang's --api-key leaves open (srt/utils/auth.py in 0.5.23)."""


class FakeEngine:
    def __init__(
        self,
        *,
        model_seed: int = 1,
        variance: str | None = None,
        fault: str | None = None,
        fault_after: int = 0,
        output_ids: bool = True,
        logprobs: bool = True,
        delay: float = 0.0,
        hang_seconds: float = 20.0,
        model_path: str = "fake/model",
        server_info: dict[str, Any] | None = None,
        info_names: str = "both",
        model_info: dict[str, Any] | None = None,
        swap_model_info: tuple[int, dict[str, Any]] | None = None,
        api_key: str | None = None,
        backends: tuple[str, ...] = ("fp_fake_1",),
    ) -> None:
        """`server_info`: what GET /server_info answers (SGLANG_SERVER_INFO updated with it; a
        value of None leaves that key out); `info_names`: "both" (SGLang 0.5.23: /server_info,
        /model_info and their deprecated /get_* names), "old" (only /get_*, as releases before
        them) or "none" (404 for all four); `model_info`: what GET /model_info answers, updated
        the same way; `swap_model_info`: (n, fields): after n POST /generate requests,
        /model_info answers with `fields` too, as after a weight update; `api_key`: every path
        but OPEN_PATHS answers 401 without the key: `Authorization: Bearer <api_key>`, or
        Anthropic's `x-api-key` on /v1/messages and /v1/models/*, or Gemini's `x-goog-api-key`
        on /v1beta/*; `backends`: what the chat, Anthropic and Gemini answers say served them
        (system_fingerprint, model, modelVersion), taken in turn, one per request."""
        assert variance in (None, *VARIANCES), variance
        assert fault in (None, *FAULTS), fault
        self.model_seed = model_seed
        self.variance = variance
        self.fault = fault
        self.fault_after = fault_after
        self.output_ids = output_ids
        self.logprobs = logprobs
        self.delay = delay if variance != "concurrent" else max(delay, 0.05)
        self.hang_seconds = hang_seconds
        self.model_path = model_path
        merged = {**SGLANG_SERVER_INFO, **(server_info or {})}
        self.server_info = {k: v for k, v in merged.items() if v is not None}
        given = {"model_path": model_path, "weight_version": "default", **(model_info or {})}
        self.model_info = {"is_generation": True, **given}
        self.swap_model_info = swap_model_info
        self.api_key = api_key
        self.backends = backends
        self.refused: list[str] = []
        """The paths answered 401 for want of the key, in order."""
        assert info_names in ("both", "old", "none"), info_names
        self.info_names = info_names
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.cache: list[tuple[int, ...]] = []
        self.decoded: dict[tuple[int, int], float] = {}
        """(hash of a context, the token generated after it) -> its decode logprob, greedy."""
        self.in_flight = 0
        self.generate_requests = 0
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.flushes = 0
        self.batch_sizes: list[int] = []
        """Prompts per POST /generate, in order (1 for a single prompt)."""
        self.sampling_params: list[dict[str, Any]] = []
        """The sampling parameters of each POST /generate, in order."""
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        """(path, body) of each request of the one-prompt protocols, in order."""
        self.unseeded_samples = 0
        self.server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeEngine:
        engine = self

        class Handler(_Handler):
            pass

        Handler.engine = engine
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def current_model_info(self) -> dict[str, Any]:
        info = dict(self.model_info)
        if self.swap_model_info is not None and self.generate_requests > self.swap_model_info[0]:
            info.update(self.swap_model_info[1])
        return {k: v for k, v in info.items() if v is not None}

    def authorized(self, path: str, headers: Any) -> bool:
        if path.startswith(("/v1/messages", "/v1/models/")):
            given = headers.get("x-api-key")
        elif path.startswith("/v1beta/"):
            given = headers.get("x-goog-api-key")
        else:
            given = (headers.get("Authorization") or "").removeprefix("Bearer ") or None
        if self.api_key is None or path in OPEN_PATHS or given == self.api_key:
            return True
        with self.lock:
            self.refused.append(path)
        return False

    def info_paths(self, name: str) -> tuple[str, ...]:
        old = "/get_" + name.removeprefix("/")
        return {"both": (name, old), "old": (old,), "none": ()}[self.info_names]

    # --- the "model" --------------------------------------------------------------------------

    def _hash(self, *parts: Any) -> int:
        digest = hashlib.blake2b(repr((self.model_seed, *parts)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def complete(
        self,
        prompt: tuple[int, ...],
        max_new_tokens: int,
        *,
        batch: list[tuple[int, ...]],
        concurrent: bool,
        cached: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> tuple[list[int], list[float], str]:
        # Greedy outputs are a function of the prompt; sampled ones of the seed and the
        # parameters too.
        sampled = temperature > 0 and self.variance != "greedy-only"
        if sampled and seed is None and self.variance == "unseeded":
            with self.lock:
                self.unseeded_samples += 1
                seed = -self.unseeded_samples
        elif seed is None:
            seed = DEFAULT_SAMPLING_SEED
        key = self._hash(prompt, temperature, top_p, seed) if sampled else self._hash(prompt)
        tokens = [3 + self._hash(key, i) % 250 for i in range(max_new_tokens)]
        logprobs = [
            -(1 + self._hash(key, "lp", i) % 100_000) / 12_345.678 for i in range(max_new_tokens)
        ]
        finish = "length"
        big = len(batch) >= 9
        flip = (
            (self.variance == "batch-logprob" and len(batch) > 8)
            or (self.variance == "logprob-then-token" and big)
            or (self.variance == "concurrent" and concurrent)
            or (self.variance == "radix" and cached > 1)
            or (self.variance == "mixed" and len({len(p) for p in batch}) > 1)
            or (self.variance == "sampled-batch" and sampled and len(batch) > 8)
        )
        if flip and logprobs:
            logprobs[0] = math.nextafter(logprobs[0], -math.inf)
        if self.variance == "batch-token" and big and max_new_tokens > 5:
            tokens[5] = 3 + (tokens[5] - 2) % 250
            logprobs[5] = -0.5
        if self.variance == "logprob-then-token" and big and max_new_tokens > 20:
            tokens[20] = 3 + (tokens[20] - 2) % 250
        if self.variance == "batch-eos" and big and max_new_tokens > 10:
            tokens, logprobs, finish = tokens[:10], logprobs[:10], "stop"
        if not sampled and not flip:
            # A model's prefill gives a token it generated the logprob its decode gave it.
            for i, (token, logprob) in enumerate(zip(tokens, logprobs, strict=True)):
                self.decoded[(hash(prompt + tuple(tokens[:i])), token)] = logprob
        return tokens, logprobs, finish

    def input_logprob(self, prompt: tuple[int, ...], position: int, cached: int) -> float | None:
        if position == 0:
            return None
        value = self.decoded.get((hash(prompt[:position]), prompt[position]))
        if value is None:
            value = -(1 + self._hash(prompt[:position], "in") % 100_000) / 9_876.5
        if self.variance == "prefill-decode" and (hash(prompt[:position]), prompt[position]) in (
            self.decoded
        ):
            value = math.nextafter(value, -math.inf)
        if self.variance == "radix" and cached > 1:
            value = math.nextafter(value, -math.inf)
        return value

    def cached_prefix(self, prompt: tuple[int, ...], limit: int) -> int:
        best = 0
        for seen in self.cache:
            n = 0
            for a, b in zip(seen, prompt, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return min(best, limit)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) leaves a broken pipe; nothing to report


def tokenize(text: str) -> tuple[int, ...]:
    return tuple(text.encode())


def detokenize(ids: list[int]) -> str:
    return "".join(chr(97 + t % 26) for t in ids)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    engine: FakeEngine

    def log_message(self, *_: Any) -> None:
        pass

    def _send(
        self, status: int, body: Any, *, raw: bytes | None = None, location: str | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _authorized(self) -> bool:
        """SGLang's answer to a request without the key (401), or True."""
        if self.engine.authorized(self.path, self.headers):
            return True
        if self.command == "POST":
            self._body()  # read, so that the connection stays usable
        self._send(401, {"error": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        e = self.engine
        if not self._authorized():
            return
        if self.path == "/health":
            self._send(503 if e.fault == "health-503" else 200, {})
        elif self.path in e.info_paths("/model_info"):
            self._send(200, e.current_model_info())
        elif self.path in e.info_paths("/server_info"):
            self._send(200, e.server_info)
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": e.model_path, "object": "model"}]})
        elif self.path == "/api/tags":
            self._send(200, {"models": [{"name": e.model_path, "model": e.model_path}]})
        elif self.path == "/api/version":
            self._send(200, {"version": "0.0.0-fake"})
        elif self.path in (f"/v1/models/{e.model_path}", f"/v1beta/models/{e.model_path}"):
            self._send(200, {"id": e.model_path, "name": f"models/{e.model_path}"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        e = self.engine
        if not self._authorized():
            return
        body = self._body()
        if self.path == "/flush_cache":
            if e.fault == "flush-400":
                self._send(400, {"error": "Cache not flushed: there are running requests"})
                return
            with e.lock:
                e.cache.clear()
                e.flushes += 1
            self._send(200, raw=b"Cache flushed.", body=None)
            return
        one_prompt = {
            "/v1/chat/completions": self._chat,
            "/api/generate": self._ollama,
            "/v1/messages": self._anthropic,
            f"/v1beta/models/{e.model_path}:generateContent": self._gemini,
        }
        if self.path not in ("/generate", "/v1/completions", *one_prompt):
            self._send(404, {"error": "not found"})
            return
        with e.lock:
            e.generate_requests += 1
            faulty = e.fault is not None and e.generate_requests > e.fault_after
            e.in_flight += 1
        try:
            if faulty and self._fault(body):
                return
            if e.delay:
                time.sleep(e.delay)
            with e.lock:
                concurrent = e.in_flight > 1
            if self.path == "/generate":
                self._generate(body, concurrent, faulty)
            elif self.path == "/v1/completions":
                self._completions(body, concurrent, faulty)
            else:
                with e.lock:
                    e.bodies.append((self.path, body))
                    backend = e.backends[(e.generate_requests - 1) % len(e.backends)]
                self._send(200, one_prompt[self.path](body, concurrent, backend))
        finally:
            with e.lock:
                e.in_flight -= 1

    def _fault(self, body: Any) -> bool:
        """Answers the faulty way and returns True, or leaves it to the normal path."""
        fault = self.engine.fault
        if fault == "http500":
            self._send(500, {"error": "CUDA error: an illegal memory access was encountered"})
        elif fault == "garbage":
            self._send(200, None, raw=b"<html>502 Bad Gateway</html>")
        elif fault == "truncated":
            data = json.dumps([{"text": "x" * 200, "meta_info": {}}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif fault == "error-200":
            self._send(200, {"error": {"message": "The engine is overloaded", "code": 503}})
        elif fault == "hang":
            self.engine.stopping.wait(self.engine.hang_seconds)
            return False
        else:
            return False
        return True

    def _generate(self, body: dict[str, Any], concurrent: bool, faulty: bool) -> None:
        e = self.engine
        params = body.get("sampling_params") or {}
        max_new = int(params.get("max_new_tokens", 16))
        if "text" in body:
            single = isinstance(body["text"], str)
            prompts = [tokenize(t) for t in ([body["text"]] if single else body["text"])]
        else:
            single = bool(body["input_ids"]) and isinstance(body["input_ids"][0], int)
            prompts = [tuple(p) for p in ([body["input_ids"]] if single else body["input_ids"])]
        with e.lock:
            e.batch_sizes.append(len(prompts))
            e.sampling_params.append(dict(params))
        sampling = {
            "temperature": float(params.get("temperature", 1.0)),
            "top_p": float(params.get("top_p", 1.0)),
            "seed": params.get("sampling_seed"),
        }
        start = body.get("logprob_start_len")
        want_logprobs = body.get("return_logprob") and e.logprobs
        outputs = []
        for prompt in prompts:
            limit = len(prompt) - 1 if start is None or start < 0 else min(start, len(prompt) - 1)
            with e.lock:
                cached = e.cached_prefix(prompt, limit)
            tokens, logprobs, finish = e.complete(
                prompt, max_new, batch=prompts, concurrent=concurrent, cached=cached, **sampling
            )
            if faulty and e.fault == "extra-tokens":
                tokens, logprobs = [*tokens, 7], [*logprobs, -1.0]
            if faulty and e.fault == "abort":
                tokens, logprobs, finish = tokens[:3], logprobs[:3], "abort"
            if faulty:
                tokens, logprobs, finish = _starve(e.fault, tokens, logprobs, finish)
            meta: dict[str, Any] = {
                "id": f"req-{e.generate_requests}",
                "finish_reason": {
                    "length": {"type": "length", "length": len(tokens)},
                    "stop": {"type": "stop", "matched": 2},
                    "abort": {"type": "abort", "message": "out of memory"},
                    None: None,
                }[finish],
                "prompt_tokens": len(prompt),
                "completion_tokens": len(tokens),
                "cached_tokens": cached,
                "e2e_latency": 0.01,
            }
            if want_logprobs:
                entries = [[lp, t, None] for lp, t in zip(logprobs, tokens, strict=True)]
                if faulty and e.fault == "short-logprobs":
                    entries = entries[:-1]
                meta["output_token_logprobs"] = entries
                if start is not None and start >= 0:
                    meta["input_token_logprobs"] = [
                        [e.input_logprob(prompt, pos, cached), prompt[pos], None]
                        for pos in range(start, len(prompt))
                    ]
            output: dict[str, Any] = {"text": detokenize(tokens), "meta_info": meta}
            if e.output_ids:
                output["output_ids"] = tokens
            if faulty and e.fault == "no-meta":
                del output["meta_info"]
            outputs.append(output)
            with e.lock:
                e.cache.append(prompt + tuple(tokens))
                e.generated_tokens += len(tokens)
                e.prompt_tokens += len(prompt)
        if faulty and e.fault == "short-list" and len(outputs) > 1:
            outputs = outputs[:-1]
        if faulty and e.fault == "redirect":
            self._send(302, outputs[0] if single else outputs, location="http://127.0.0.1:1/login")
            return
        if body.get("stream") and single:
            self._stream(outputs[0])
            return
        self._send(200, outputs[0] if single else outputs)

    def _stream(self, output: dict[str, Any]) -> None:
        """SGLang's streamed /generate (what `detinfer bench` reads): one server-sent event per
        token with the running completion_tokens, then [DONE]."""
        n = output["meta_info"]["completion_tokens"]
        events = [
            {"text": output["text"][: k + 1], "meta_info": {"completion_tokens": k + 1}}
            for k in range(n)
        ]
        lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
        data = "".join(lines).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _completions(self, body: dict[str, Any], concurrent: bool, faulty: bool) -> None:
        e = self.engine
        single = isinstance(body["prompt"], str)
        texts = [body["prompt"]] if single else body["prompt"]
        prompts = [tokenize(t) for t in texts]
        max_new = int(body.get("max_tokens", 16))
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        sampling = {
            "temperature": float(body.get("temperature", 1.0)),
            "top_p": float(body.get("top_p", 1.0)),
            "seed": body.get("seed"),
        }
        for i, prompt in enumerate(prompts):
            tokens, logprobs, finish = e.complete(
                prompt, max_new, batch=prompts, concurrent=concurrent, cached=0, **sampling
            )
            if faulty:
                tokens, logprobs, finish = _starve(e.fault, tokens, logprobs, finish)
            choice: dict[str, Any] = {
                "index": i,
                "text": detokenize(tokens),
                "finish_reason": finish,
                "logprobs": None,
            }
            if body.get("logprobs") is not None and e.logprobs:
                names = (
                    [f"token_id:{t}" for t in tokens]
                    if body.get("return_tokens_as_token_ids")  # vLLM's extension
                    else [detokenize([t]) + str(t) for t in tokens]
                )
                choice["logprobs"] = {
                    "tokens": names,
                    "token_logprobs": logprobs,
                    "top_logprobs": None,
                    "text_offset": [],
                }
            choices.append(choice)
            usage["prompt_tokens"] += len(prompt)
            usage["completion_tokens"] += len(tokens)
            with e.lock:
                e.generated_tokens += len(tokens)
                e.prompt_tokens += len(prompt)
        # Servers may list choices in any order; the index is what counts.
        self._send(
            302 if faulty and e.fault == "redirect" else 200,
            {"id": "cmpl-1", "object": "text_completion", "choices": choices[::-1], "usage": usage},
            location="http://127.0.0.1:1/login" if faulty and e.fault == "redirect" else None,
        )

    def _one(
        self, text: str, max_new: int, concurrent: bool, sampling: dict[str, Any]
    ) -> tuple[tuple[int, ...], list[int], list[float], str]:
        e = self.engine
        prompt = tokenize(text)
        sampling = {k: v for k, v in sampling.items() if v is not None}
        tokens, logprobs, finish = e.complete(
            prompt, max_new, batch=[prompt], concurrent=concurrent, cached=0, **sampling
        )
        with e.lock:
            e.generated_tokens += len(tokens)
            e.prompt_tokens += len(prompt)
        return prompt, tokens, logprobs, finish

    def _chat(self, body: dict[str, Any], concurrent: bool, backend: str) -> dict[str, Any]:
        """POST /v1/chat/completions (platform.openai.com/docs/api-reference/chat/object)."""
        text = body["messages"][-1]["content"]
        sampling = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0)}
        prompt, tokens, logprobs, finish = self._one(
            text,
            int(body.get("max_tokens", 16)),
            concurrent,
            {**sampling, "seed": body.get("seed")},
        )
        entries = [_entry(t, lp) for t, lp in zip(tokens, logprobs, strict=True)]
        if body.get("return_tokens_as_token_ids"):  # vLLM's extension
            entries = [
                {**e, "token": f"token_id:{t}"} for e, t in zip(entries, tokens, strict=True)
            ]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": detokenize(tokens)},
            "logprobs": {"content": entries}
            if body.get("logprobs") and self.engine.logprobs
            else None,
            "finish_reason": finish,
        }
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body.get("model"),
            "system_fingerprint": backend,
            "choices": [choice],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(tokens)},
        }

    def _ollama(self, body: dict[str, Any], concurrent: bool, backend: str) -> dict[str, Any]:
        """POST /api/generate, stream false (docs.ollama.com/api/generate)."""
        options = body.get("options") or {}
        sampling = {
            "temperature": options.get("temperature", 0.8),
            "top_p": options.get("top_p", 0.9),
        }
        prompt, tokens, logprobs, finish = self._one(
            body["prompt"], int(options.get("num_predict", 16)), concurrent,
            {**sampling, "seed": options.get("seed")},
        )  # fmt: skip
        answer: dict[str, Any] = {
            "model": body.get("model"),
            "created_at": "2026-12-07T00:00:00Z",
            "response": detokenize(tokens),
            "done": True,
            "done_reason": finish,
            "context": [*prompt, *tokens],
            "prompt_eval_count": len(prompt),
            "eval_count": len(tokens),
        }
        if body.get("logprobs") and self.engine.logprobs:
            answer["logprobs"] = [_entry(t, lp) for t, lp in zip(tokens, logprobs, strict=True)]
        return answer

    def _anthropic(self, body: dict[str, Any], concurrent: bool, backend: str) -> dict[str, Any]:
        """POST /v1/messages (docs.anthropic.com/en/api/messages): no seed, no logprobs."""
        text = body["messages"][-1]["content"]
        sampling = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0)}
        prompt, tokens, _, finish = self._one(text, int(body["max_tokens"]), concurrent, sampling)
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": backend,
            "content": [{"type": "text", "text": detokenize(tokens)}],
            "stop_reason": {"length": "max_tokens", "stop": "end_turn"}[finish],
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt), "output_tokens": len(tokens)},
        }

    def _gemini(self, body: dict[str, Any], concurrent: bool, backend: str) -> dict[str, Any]:
        """POST /v1beta/models/MODEL:generateContent (ai.google.dev/api/generate-content)."""
        text = body["contents"][-1]["parts"][0]["text"]
        config = body.get("generationConfig") or {}
        sampling = {
            "temperature": config.get("temperature", 1.0),
            "top_p": config.get("topP", 0.95),
        }
        prompt, tokens, logprobs, finish = self._one(
            text, int(config.get("maxOutputTokens", 16)), concurrent,
            {**sampling, "seed": config.get("seed")},
        )  # fmt: skip
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": detokenize(tokens)}], "role": "model"},
            "finishReason": {"length": "MAX_TOKENS", "stop": "STOP"}[finish],
            "index": 0,
        }
        if config.get("responseLogprobs") and self.engine.logprobs:
            chosen = [
                {"token": detokenize([t]), "tokenId": t, "logProbability": lp}
                for t, lp in zip(tokens, logprobs, strict=True)
            ]
            candidate["logprobsResult"] = {
                "topCandidates": [{"candidates": [c]} for c in chosen],
                "chosenCandidates": chosen,
            }
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": len(prompt),
                "candidatesTokenCount": len(tokens),
                "totalTokenCount": len(prompt) + len(tokens),
            },
            "modelVersion": backend,
            "responseId": "r-1",
        }


def _entry(token: int, logprob: float) -> dict[str, Any]:
    """A `{token, logprob, bytes, top_logprobs}` entry (OpenAI's chat shape, Ollama's too)."""
    text = detokenize([token]) + str(token)
    top = {"token": text, "logprob": logprob, "bytes": list(text.encode())}
    return {**top, "top_logprobs": [top]}


def _starve(
    fault: str | None, tokens: list[int], logprobs: list[float], finish: str | None
) -> tuple[list[int], list[float], str | None]:
    """The faults that answer in the protocol's shape but carry no evidence."""
    if fault in ("empty-stop", "empty-null"):
        return [], [], "stop" if fault == "empty-stop" else None
    if fault == "one-token":
        return tokens[:1], logprobs[:1], "stop"
    if fault == "nan-logprobs":
        return tokens, [math.nan] * len(tokens), finish
    if fault == "inf-logprobs":
        return tokens, [-math.inf] * len(tokens), finish
    if fault == "constant-logprobs":
        return tokens, [-0.5] * len(tokens), finish
    return tokens, logprobs, finish
