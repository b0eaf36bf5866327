"""The engine's /metrics, named as SGLang names them (sglang:*), so dashboards work for both."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EngineMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]
        r = self.registry
        self.prompt_tokens = Counter(
            "sglang:prompt_tokens", "Prompt tokens processed", labels, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            "sglang:generation_tokens", "Tokens generated", labels, registry=r
        ).labels(model_name)
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Time to first token",
            labels,
            buckets=_LATENCY,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "End-to-end request latency",
            labels,
            buckets=_LATENCY,
            registry=r,
        ).labels(model_name)
        self.tpot = Histogram(
            "sglang:time_per_output_token_seconds",
            "Time per output token after the first",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        ).labels(model_name)
        self.running = Gauge(
            "sglang:num_running_reqs", "Requests in the running batch", labels, registry=r
        ).labels(model_name)
        self.queued = Gauge("sglang:num_queue_reqs", "Requests waiting", labels, registry=r).labels(
            model_name
        )
        self.throughput = Gauge(
            "sglang:gen_throughput", "Generated tokens per second (last 5 s)", labels, registry=r
        ).labels(model_name)
        self.cache_hit_rate = Gauge(
            "sglang:cache_hit_rate",
            "Prompt tokens served from the prefix cache",
            labels,
            registry=r,
        ).labels(model_name)
        self.token_usage = Gauge(
            "sglang:token_usage", "Prefix-cache tokens over its capacity", labels, registry=r
        ).labels(model_name)
        self._window: tuple[float, int] = (time.monotonic(), 0)

    def finished(self, request) -> None:
        self.prompt_tokens.inc(len(request.prompt))
        self.generation_tokens.inc(len(request.output))
        if request.finish_reason and request.finish_reason.get("type") == "abort":
            return
        end = request.finished_at or time.monotonic()
        self.e2e.observe(end - request.created)
        if request.first_token_at is not None:
            self.ttft.observe(request.first_token_at - request.created)
            if len(request.output) > 1:
                self.tpot.observe((end - request.first_token_at) / (len(request.output) - 1))

    def state(self, engine) -> None:
        running, queued = engine.queue_depth
        self.running.set(running)
        self.queued.set(queued)
        cache = engine.prefix_cache
        if cache is not None:
            self.cache_hit_rate.set(cache.hit_rate)
            self.token_usage.set(cache.tokens / cache.max_tokens if cache.max_tokens else 0.0)
        now = time.monotonic()
        since, tokens = self._window
        if now - since >= 5.0:
            self.throughput.set((engine.generated_tokens - tokens) / (now - since))
            self._window = (now, engine.generated_tokens)
