"""Dynamic batching: one thread runs the model; requests join the running batch as they arrive.

Like a real engine, each step either prefills newly admitted requests (together, as one batch) or
advances every running sequence by one token (one decode batch). Which sequences share a batch
therefore depends on when requests arrive, which is exactly how production traffic makes a
batch-variant engine nondeterministic. The waiting queue is bounded; a full queue is refused
(the server answers 503). Finished sequences leave their KV in a prefix cache that later requests
reuse and /flush_cache empties. Changes that need the engine idle (a weight swap) run on the
engine's thread between steps, once the requests before them have finished (`when_idle`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from detinfer.engine.config import EngineArgs, ServedWeights
from detinfer.engine.faults import Faults
from detinfer.engine.kernels import PlantedKernels
from detinfer.engine.lora import LoraAdapter
from detinfer.engine.model import KVCache, Step, Transformer
from detinfer.engine.sampling import SamplingParams, choose
from detinfer.engine.tokenizer import EOS

log = logging.getLogger("detinfer.engine")
DETERMINISTIC_DEFAULT_SEED = 42
"""What SGLang samples with in deterministic mode when a request sends no sampling_seed
(SamplingBatchInfo.from_schedule_batch in python/sglang/srt/sampling/sampling_batch_info.py)."""
_ids = itertools.count(1)


class Overloaded(Exception):
    """The waiting queue is full."""


class ShuttingDown(Exception):
    pass


@dataclass
class Event:
    kind: str  # "token" | "finish" | "error"
    request: Request
    message: str = ""
    tokens: int = 0
    """Output tokens at the time of the event (the lists only grow, so a prefix is consistent)."""


@dataclass(eq=False)
class Request:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    seed: int | None = None
    """The request's sampling_seed. In deterministic mode None becomes 42 at submission; in
    default mode the seed is not used at all (SGLang passes none to its sampler then)."""
    return_logprob: bool = False
    logprob_start_len: int = -1
    lora: LoraAdapter | None = None
    rid: str = field(default_factory=lambda: f"req-{next(_ids)}")
    # Filled in by the engine thread.
    output: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)
    input_logprobs: list[float | None] = field(default_factory=list)
    cached_tokens: int = 0
    finish_reason: dict[str, Any] | None = None
    aborted: bool = False
    cache: KVCache | None = None
    counts: dict[int, int] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float | None = None
    streaming: bool = False
    """Whether its client streams (SGLang's metrics label it is_streaming)."""
    weight_version: str | None = None
    """The weight version its tokens come from (SGLang's meta_info.weight_version); set at
    prefill."""
    route: str = "generate"
    """The API it came by: "generate" (/generate) or "openai" (/v1/completions)."""
    arrival: int = 0
    """Which submission it came in (the requests of one list batch share it)."""

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class PrefixCache:
    """Finished sequences' KV by their tokens; a new request reuses the longest common prefix made
    with the same adapter (an adapter changes every layer's KV after the first)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, tuple[torch.Tensor, KVCache, str | None]] = OrderedDict()
        self.tokens = 0
        self._keys = itertools.count()
        self.hits = 0
        self.lookups = 0

    def insert(self, tokens: list[int], cache: KVCache, lora_id: str | None = None) -> None:
        if not tokens or len(tokens) > self.max_tokens:
            return
        self.entries[next(self._keys)] = (torch.tensor(tokens), cache, lora_id)
        self.tokens += len(tokens)
        while self.tokens > self.max_tokens:
            _, (old, _, _) = self.entries.popitem(last=False)
            self.tokens -= len(old)

    def match(
        self, tokens: list[int], limit: int, lora_id: str | None = None
    ) -> tuple[int, KVCache | None]:
        """Longest cached prefix of `tokens`, at most `limit` long, and a copy of its KV."""
        self.lookups += len(tokens)
        if limit <= 0 or not self.entries:
            return 0, None
        query = torch.tensor(tokens[:limit])
        best, best_key = 0, None
        for key, (stored, _, made_with) in self.entries.items():
            n = min(len(stored), len(query))
            if n <= best or made_with != lora_id or int(stored[0]) != int(query[0]):
                continue
            differ = (stored[:n] != query[:n]).nonzero()
            length = int(differ[0]) if len(differ) else n
            if length > best:
                best, best_key = length, key
        if best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        self.hits += best
        return best, self.entries[best_key][1].prefix(best)

    def flush(self) -> None:
        self.entries.clear()
        self.tokens = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass
class _Change:
    """Something to run on the engine thread while no request runs (`Engine.when_idle`)."""

    run: Callable[[], None]
    done: Future[None]


class Engine:
    def __init__(
        self, model: Transformer, args: EngineArgs, metrics=None, faults: Faults | None = None
    ):
        self.model = model
        self.args = args
        self.faults = faults or Faults()
        """Planted faults (engine/faults.py, a test tool); none by default."""
        self.served = ServedWeights.at_start(args)
        """Replaced whole (never mutated), so a reader on another thread sees one or the other."""
        self.metrics = metrics
        self.prefix_cache = None if args.disable_radix_cache else PrefixCache(args.max_cache_tokens)
        self._cv = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._admitted: list[Request] = []
        """Requests taken from the queue whose prefill is running (in neither list above)."""
        self._changes: deque[_Change] = deque()
        self._held: deque[Request] = deque()
        """Requests submitted while a change waits: they start after it (with the new weights)."""
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.generated_tokens = 0
        self._arrivals = itertools.count(1)
        # Default mode samples from one generator that every sample advances, in batch order,
        # like torch's global generator in SGLang (seeded by --random-seed at start).
        self._generator = torch.Generator().manual_seed(args.random_seed)

    # -- called from the server's thread ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)

    def submit(self, requests: list[Request]) -> None:
        """Queue requests together (they join the same prefill batch when the engine is free)."""
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            waiting = len(self._waiting) + len(self._held)
            if waiting + len(requests) > self.args.max_queued_requests:
                raise Overloaded(
                    f"{waiting} requests are waiting and --max-queued-requests is "
                    f"{self.args.max_queued_requests}"
                )
            if self.args.enable_deterministic_inference:
                for r in requests:
                    if r.seed is None:
                        r.seed = DETERMINISTIC_DEFAULT_SEED
            self.faults.submitted(len(requests))
            arrival = next(self._arrivals)
            for r in requests:
                r.arrival = arrival
            (self._held if self._changes else self._waiting).extend(requests)
            self._cv.notify_all()

    def abort(self, request: Request) -> None:
        """Free a request's slot (its client went away); the engine drops it before its next step."""
        with self._cv:
            request.aborted = True
            self._cv.notify_all()

    def abort_all(self) -> None:
        """Abort every request submitted so far (SGLang's abort_all_requests)."""
        with self._cv:
            for r in [*self._waiting, *self._held, *self._admitted, *self._running]:
                r.aborted = True
            self._cv.notify_all()

    def when_idle(self, run: Callable[[], None]) -> Future[None]:
        """Run `run` on the engine thread once the requests submitted before this call have
        finished; requests submitted after it wait, and start after it. This is what SGLang's
        weight updates get from its model-update lock (TokenizerManager.update_weights_from_disk
        takes it as a writer, every generate request holds it as a reader to its end, and waiting
        writers go first): a request runs all on the old weights or all on the new ones."""
        change = _Change(run, Future())
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._changes.append(change)
            self._cv.notify_all()
        return change.done

    def replace_weights(
        self, model: Transformer, model_path: str, version: str | None
    ) -> Future[None]:
        """Serve `model` from the next idle moment on (`when_idle`); the prefix cache, made with
        the old weights, is emptied (SGLang's flush_cache after an update, on by default)."""

        def swap() -> None:
            self.model = model
            if self.prefix_cache is not None:
                self.prefix_cache.flush()
            self.served = replace(
                self.served,
                model_path=model_path,
                served_model_name=model_path,
                weight_version=self.served.weight_version if version is None else version,
            )

        return self.when_idle(swap)

    def set_weight_version(self, version: str) -> None:
        """Report another weight version (the weights stay); under the lock that weight swaps
        also replace `served` under, so neither undoes the other."""
        with self._cv:
            self.served = replace(self.served, weight_version=version)

    def flush_cache(self) -> bool:
        """Empty the prefix cache, only while no request runs or waits (as SGLang does)."""
        with self._cv:
            if self._waiting or self._held or self._running or self._admitted:
                return False
            if self.prefix_cache is not None:
                self.prefix_cache.flush()
            return True

    @property
    def queue_depth(self) -> tuple[int, int]:
        return len(self._running), len(self._waiting) + len(self._held)

    # -- the engine thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._waiting or self._running or self._changes):
                    self._cv.wait()
                if self._stopping:
                    break
                for r in [r for r in self._waiting if r.aborted]:
                    self._waiting.remove(r)
                    self._finish(r, {"type": "abort"})
                if self._changes and not (self._waiting or self._running):
                    self._apply_changes()
                    continue
                admitted = self._admit()
                self._admitted = admitted
            for r in [r for r in self._running if r.aborted]:
                self._running.remove(r)
                self._finish(r, {"type": "abort"})
            batch = admitted or list(self._running)
            if not batch:
                continue
            try:
                with torch.inference_mode():
                    self._step(batch, prefill=bool(admitted))
            except Exception as exc:  # a bug must fail requests, not the server
                log.exception("engine step failed")
                for r in batch:
                    if r in self._running:
                        self._running.remove(r)
                    r.emit(Event("error", r, f"engine step failed: {exc}"))
            with self._cv:
                self._admitted = []
            self._publish()
        for r in [*self._waiting, *self._held, *self._running]:
            r.emit(Event("error", r, "the server is shutting down"))
        for change in self._changes:
            change.done.set_exception(ShuttingDown("the server is shutting down"))

    def _apply_changes(self) -> None:
        """Run the waiting changes (the engine is idle), then let the held requests in."""
        while self._changes:
            change = self._changes.popleft()
            try:
                change.run()
            except Exception as exc:  # the caller answers for it; the engine keeps serving
                change.done.set_exception(exc)
            else:
                change.done.set_result(None)
        self._waiting.extend(self._held)
        self._held.clear()

    def _admit(self) -> list[Request]:
        admitted: list[Request] = []
        budget = self.args.max_prefill_tokens
        while self._waiting and len(self._running) + len(admitted) < self.args.max_running_requests:
            r = self._waiting[0]
            if admitted and len(r.prompt) > budget:
                break
            self._waiting.popleft()
            budget -= len(r.prompt)
            admitted.append(r)
        return admitted

    def _step(self, batch: list[Request], prefill: bool) -> None:
        model = self.model
        steps = []
        for r in batch:
            if prefill:
                steps.append(self._prefill_step(r))
            else:
                assert r.cache is not None, "a decoding request was prefilled"
                steps.append(Step([r.output[-1]], r.cache))
        if isinstance(model.kernels, PlantedKernels):
            model.kernels.active = self.faults.reorders(batch, prefill)
        logits = model.forward(steps)
        # One log-softmax over the whole batch (a batch-variant kernel sees the batch here too).
        rows = torch.cat(logits)
        logprobs = model.kernels.log_softmax(rows)
        offset = 0
        for r, step, lg in zip(batch, steps, logits, strict=True):
            lp = logprobs[offset : offset + lg.shape[0]]
            offset += lg.shape[0]
            if prefill and r.return_logprob and r.logprob_start_len >= 0:
                self._input_logprobs(r, step, lp)
            if prefill:
                self._running.append(r)
                if r.params.max_new_tokens == 0:
                    self._running.remove(r)
                    self._finish(r, {"type": "length", "length": 0})
                    continue
            assert r.cache is not None, "prefill gives every request its cache"
            position = r.cache.length
            token = choose(lg[-1], r.params, position, self._noise_source(r), r.counts)
            r.output.append(token)
            r.output_logprobs.append(float(lp[-1, token]))
            r.counts[token] = r.counts.get(token, 0) + 1
            self.generated_tokens += 1
            now = time.monotonic()
            if r.first_token_at is None:
                r.first_token_at = now
            elif self.metrics is not None and r.last_token_at is not None:
                self.metrics.token(now - r.last_token_at)
            r.last_token_at = now
            r.emit(Event("token", r, tokens=len(r.output)))
            if token == EOS and not r.params.ignore_eos:
                self._running.remove(r)
                self._finish(r, {"type": "stop", "matched": EOS})
            elif len(r.output) >= r.params.max_new_tokens:
                self._running.remove(r)
                self._finish(r, {"type": "length", "length": r.params.max_new_tokens})

    def _noise_source(self, r: Request) -> int | torch.Generator:
        if self.args.enable_deterministic_inference and not self.faults.ignores_seed(r.route):
            assert r.seed is not None, "submission gives every request a seed"
            return r.seed
        return self._generator

    def _prefill_step(self, r: Request) -> Step:
        limit = len(r.prompt) - 1  # at least one token must run to give the next token's logits
        if r.return_logprob and r.logprob_start_len >= 0:
            # Input logprobs need the logits of every position from logprob_start_len - 1 on.
            limit = min(limit, max(r.logprob_start_len, 1) - 1)
        r.weight_version = self.served.weight_version
        lora_id = r.lora.id if r.lora is not None else None
        cached, cache = (0, None)
        if self.prefix_cache is not None:
            cached, cache = self.prefix_cache.match(r.prompt, limit, lora_id)
        if cache is None:
            cache = KVCache.empty(
                self.model.config,
                len(r.prompt) + r.params.max_new_tokens,
                self.model.dtype,
                self.model.device,
            )
        r.cache = cache
        r.cached_tokens = cached
        logits_from = -1
        if r.return_logprob and r.logprob_start_len >= 0:
            logits_from = max(r.logprob_start_len, 1) - 1 - cached
        return Step(r.prompt[cached:], cache, logits_from, r.lora)

    def _input_logprobs(self, r: Request, step: Step, lp: torch.Tensor) -> None:
        """Logprob of each prompt token from logprob_start_len on (the first token has none)."""
        first_row_position = r.cached_tokens + max(step.logits_from, 0)
        values: list[float | None] = []
        for position in range(r.logprob_start_len, len(r.prompt)):
            if position == 0:
                values.append(None)
                continue
            row = position - 1 - first_row_position
            values.append(float(lp[row, r.prompt[position]]))
        r.input_logprobs = values

    def _finish(self, r: Request, reason: dict[str, Any]) -> None:
        r.finish_reason = reason
        r.finished_at = time.monotonic()
        if (
            self.prefix_cache is not None
            and r.cache is not None
            and r.cache.length > 0
            and reason["type"] != "abort"
        ):
            with self._cv:
                tokens = (r.prompt + r.output)[: r.cache.length]
                self.prefix_cache.insert(tokens, r.cache, r.lora.id if r.lora else None)
        r.cache = None
        if self.metrics is not None:
            self.metrics.finished(r)
        r.emit(Event("finish", r, tokens=len(r.output)))

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.state(self)
