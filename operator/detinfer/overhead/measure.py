"""Drive one workload against two SGLang-compatible endpoints and compute the figures.

Each request is a streaming POST /generate with token ids, greedy, `ignore_eos`, so both sides
generate exactly the same number of tokens. Time to first token is the arrival of the first
chunk that carries a token; the inter-token latency is each later chunk's gap divided by the
tokens it added; end to end is the last chunk. Per level and round, both endpoints get the same
prompts (new ones every round), one after the other, and the order alternates between rounds.
A client key (detinfer.client_key) goes on every request; a 401 or 403 is could not measure.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from detinfer.api.overhead import (
    REASON_LIMIT,
    LevelResult,
    OverheadSummary,
    OverheadWorkload,
    SideFigures,
)
from detinfer.client_key import ClientKey, refusal
from detinfer.percentile import percentile

DETERMINISTIC, BASELINE = "deterministic", "baseline"
TOKEN_ID_RANGE = (32, 127)
"""Prompt token ids: ordinary tokens in every tokenizer we know (specials sit at the ends), and
printable bytes in the reference engine's byte-level one."""


class CouldNotMeasure(Exception):
    """An endpoint failed a request: no figure of this run is a result."""


@dataclass
class Run:
    """One endpoint, one level, one round."""

    side: str
    concurrency: int
    round: int
    wall_seconds: float = 0.0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0


def prompts(workload: OverheadWorkload, concurrency: int, round_: int) -> list[list[int]]:
    """The round's prompts: the same for both endpoints, new in every round and level."""
    out = []
    for i in range(workload.requests):
        rng = random.Random(f"{workload.seed}:{concurrency}:{round_}:{i}")
        out.append([rng.randrange(*TOKEN_ID_RANGE) for _ in range(workload.input_tokens)])
    return out


async def one_request(
    http: httpx.AsyncClient, name: str, ids: list[int], output_tokens: int, run: Run
) -> None:
    body = {
        "input_ids": ids,
        "sampling_params": {
            "temperature": 0,
            "max_new_tokens": output_tokens,
            "ignore_eos": True,
        },
        "stream": True,
    }
    started = time.perf_counter()
    last_time, last_tokens, first = started, 0, None
    try:
        async with http.stream("POST", "/generate", json=body) as response:
            _raise_if_refused(http, name, "POST /generate", response.status_code)
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:160]
                raise CouldNotMeasure(
                    f"{name}: POST /generate answered {response.status_code}: {text}"
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise CouldNotMeasure(f"{name}: the stream reported {chunk['error']}")
                tokens = int(chunk.get("meta_info", {}).get("completion_tokens", 0))
                now = time.perf_counter()
                if tokens > last_tokens:
                    if first is None:
                        first = now
                        run.ttft.append(now - started)
                    else:
                        gap = (now - last_time) / (tokens - last_tokens)
                        run.itl.extend([gap] * (tokens - last_tokens))
                    last_time, last_tokens = now, tokens
    except httpx.HTTPError as exc:
        raise CouldNotMeasure(f"{name}: {type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CouldNotMeasure(f"{name}: a stream chunk is not SGLang's shape: {exc}") from None
    if last_tokens != output_tokens:
        raise CouldNotMeasure(
            f"{name}: generated {last_tokens} tokens of {output_tokens} asked (ignore_eos was set)"
        )
    run.e2e.append(last_time - started)
    run.tokens += last_tokens


def _raise_if_refused(http: httpx.AsyncClient, name: str, request: str, status: int) -> None:
    """A 401 or 403: the engine wants another key. The client carries the key's header, so it
    knows whether one was sent."""
    why = refusal(request, status, "authorization" in http.headers)
    if why is not None:
        raise CouldNotMeasure(f"{name}: {why}")


async def drive(
    http: httpx.AsyncClient,
    name: str,
    workload: OverheadWorkload,
    concurrency: int,
    round_: int,
    side: str,
    on_request: Callable[[], None] = lambda: None,
) -> Run:
    run = Run(side, concurrency, round_)
    gate = asyncio.Semaphore(concurrency)

    async def bounded(ids: list[int]) -> None:
        async with gate:
            await one_request(http, name, ids, workload.output_tokens, run)
            on_request()

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for ids in prompts(workload, concurrency, round_):
                group.create_task(bounded(ids))
    except ExceptionGroup as failed:
        first = _first(failed)
        if isinstance(first, CouldNotMeasure):
            raise first from None
        raise
    run.wall_seconds = time.perf_counter() - started
    return run


async def wait_ready(http: httpx.AsyncClient, name: str, wait_seconds: float) -> None:
    """Poll GET /health until it answers 200 (connection errors retried, with backoff): a pod
    the kubelet just called ready may not listen yet. CouldNotMeasure after `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    delay, last = 0.1, "no answer"
    while True:
        try:
            response = await http.get("/health", timeout=max(0.05, min(5.0, wait_seconds)))
            if response.status_code == 200:
                return
            _raise_if_refused(http, name, "GET /health", response.status_code)
            last = f"GET /health answered {response.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise CouldNotMeasure(f"{name}: {last} (not ready after {wait_seconds:g} s)")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _first(group: BaseExceptionGroup) -> BaseException:
    inner = group.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner


def order(round_: int) -> tuple[str, str]:
    """Which endpoint goes first in a round: they alternate."""
    return (DETERMINISTIC, BASELINE) if round_ % 2 == 0 else (BASELINE, DETERMINISTIC)


def figures(runs: list[Run]) -> SideFigures:
    def ms(values: list[float], q: float) -> float:
        value = percentile(values, q)
        return round((value or 0.0) * 1000, 2)

    ttft = [v for r in runs for v in r.ttft]
    itl = [v for r in runs for v in r.itl]
    e2e = [v for r in runs for v in r.e2e]
    rates = [r.tokens_per_second for r in runs]
    return SideFigures(
        ttft_p50_ms=ms(ttft, 0.50),
        ttft_p95_ms=ms(ttft, 0.95),
        itl_p50_ms=ms(itl, 0.50),
        itl_p95_ms=ms(itl, 0.95),
        e2e_p50_ms=ms(e2e, 0.50),
        e2e_p95_ms=ms(e2e, 0.95),
        tokens_per_second=round(statistics.median(rates), 1),
        tokens_per_second_spread=round(max(rates) - min(rates), 1),
    )


def _percent(numerator: float, denominator: float) -> float:
    return round((numerator / denominator - 1) * 100, 1) if denominator > 0 else 0.0


def level_result(concurrency: int, runs: list[Run]) -> LevelResult:
    det = figures([r for r in runs if r.side == DETERMINISTIC])
    base = figures([r for r in runs if r.side == BASELINE])
    return LevelResult(
        concurrency=concurrency,
        deterministic=det,
        baseline=base,
        throughput_overhead_percent=_percent(base.tokens_per_second, det.tokens_per_second),
        e2e_p50_overhead_percent=_percent(det.e2e_p50_ms, base.e2e_p50_ms),
        ttft_p50_overhead_percent=_percent(det.ttft_p50_ms, base.ttft_p50_ms),
        itl_p50_overhead_percent=_percent(det.itl_p50_ms, base.itl_p50_ms),
    )


class Progress:
    """What a caller sees while it runs; the default sees nothing."""

    def start(self, total_requests: int) -> None: ...
    def request_done(self) -> None: ...
    def run_done(self, run: Run) -> None: ...
    def stop(self) -> None: ...


async def measure(
    endpoints: dict[str, str],
    workload: OverheadWorkload,
    request_timeout: float = 600.0,
    progress: Progress | None = None,
    wait_seconds: float = 120.0,
    api_key: ClientKey | None = None,
) -> OverheadSummary:
    """Run the workload; `endpoints` maps DETERMINISTIC and BASELINE to base URLs. Each must
    answer GET /health within `wait_seconds` first. `api_key` goes on every request."""
    progress = progress or Progress()
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=max(workload.concurrency) + 4)
    clients = {
        side: httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(request_timeout),
            limits=limits,
            trust_env=False,
            follow_redirects=False,
            headers=api_key.headers() if api_key else None,
        )
        for side, url in endpoints.items()
    }
    total = 2 * workload.requests * workload.rounds * len(workload.concurrency)
    progress.start(total)
    levels: list[LevelResult] = []
    tokens = 0
    try:
        # One request each first, not counted: the first request of a process pays for lazy
        # initialisation (kernels, allocator) that no later request sees.
        warm = [list(range(TOKEN_ID_RANGE[0], TOKEN_ID_RANGE[0] + 8))]
        for side in (DETERMINISTIC, BASELINE):
            await wait_ready(clients[side], f"{side} {endpoints[side]}", wait_seconds)
        for side in (DETERMINISTIC, BASELINE):
            await one_request(
                clients[side], f"{side} {endpoints[side]}", warm[0], 4, Run(side, 1, -1)
            )
        for concurrency in workload.concurrency:
            runs = []
            for round_ in range(workload.rounds):
                for side in order(round_):
                    run = await drive(
                        clients[side],
                        f"{side} {endpoints[side]}",
                        workload,
                        concurrency,
                        round_,
                        side,
                        progress.request_done,
                    )
                    tokens += run.tokens
                    progress.run_done(run)
                    runs.append(run)
            levels.append(level_result(concurrency, runs))
    except CouldNotMeasure as exc:
        return OverheadSummary(
            measured=False,
            reason=str(exc)[:REASON_LIMIT],
            workload=workload,
            levels=levels,
            duration_seconds=round(time.perf_counter() - started, 3),
            tokens_generated=tokens,
        )
    finally:
        progress.stop()
        for http in clients.values():
            await http.aclose()
    top = max(levels, key=lambda level: level.concurrency)
    return OverheadSummary(
        measured=True,
        workload=workload,
        levels=levels,
        headline_percent=top.throughput_overhead_percent,
        headline_concurrency=top.concurrency,
        duration_seconds=round(time.perf_counter() - started, 3),
        tokens_generated=tokens,
    )
