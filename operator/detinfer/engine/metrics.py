"""The engine's /metrics, named and labelled as SGLang 0.5.23 does (sglang:*), so that
dashboards and alerts work for both.

SGLang has two collectors (python/sglang/srt/observability/metrics_collector.py): the
tokenizer's per-request metrics, labelled model_name and engine_type (and is_streaming on the
per-request ones), and the scheduler's gauges, labelled model_name, engine_type, tp_rank,
pp_rank and moe_ep_rank. The reference engine is one unified (neither prefill nor decode)
engine on one device, so engine_type is "unified" and every rank is 0.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
ENGINE_TYPE = "unified"
TOKENIZER_LABELS = ("model_name", "engine_type")
SCHEDULER_LABELS = ("model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank")
STREAMING = "is_streaming"


class EngineMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._tokenizer = {"model_name": model_name, "engine_type": ENGINE_TYPE}
        scheduler = {**self._tokenizer, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
        per_request = [*TOKENIZER_LABELS, STREAMING]
        self._prompt_tokens = Counter(
            "sglang:prompt_tokens", "Number of prefill tokens processed.", per_request, registry=r
        )
        self._generation_tokens = Counter(
            "sglang:generation_tokens",
            "Number of generation tokens processed.",
            per_request,
            registry=r,
        )
        self._ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            per_request,
            buckets=_LATENCY,
            registry=r,
        )
        self._e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            per_request,
            buckets=_LATENCY,
            registry=r,
        )
        self._request_tpot = Histogram(
            "sglang:request_time_per_output_token_seconds",
            "Per-request TPOT in seconds: (finished_time - first_token_time) / "
            "(completion_tokens - 1).",
            per_request,
            buckets=_TOKEN_LATENCY,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            TOKENIZER_LABELS,
            buckets=_TOKEN_LATENCY,
            registry=r,
        ).labels(**self._tokenizer)

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, SCHEDULER_LABELS, registry=r).labels(**scheduler)

        self.running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.queued = gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.")
        self.throughput = gauge(
            "sglang:gen_throughput", "The generation throughput (token/s), over the last 5 s."
        )
        self.cache_hit_rate = gauge(
            "sglang:cache_hit_rate", "The prefix cache hit rate (prompt tokens from the cache)."
        )
        self.token_usage = gauge(
            "sglang:token_usage", "The token usage: prefix-cache tokens over its capacity."
        )
        self._window: tuple[float, int] = (time.monotonic(), 0)

    def finished(self, request) -> None:
        labels = {**self._tokenizer, STREAMING: "true" if request.streaming else "false"}
        self._prompt_tokens.labels(**labels).inc(len(request.prompt))
        self._generation_tokens.labels(**labels).inc(len(request.output))
        if request.finish_reason and request.finish_reason.get("type") == "abort":
            return
        end = request.finished_at or time.monotonic()
        self._e2e.labels(**labels).observe(end - request.created)
        if request.first_token_at is not None:
            self._ttft.labels(**labels).observe(request.first_token_at - request.created)
            if len(request.output) > 1:
                self._request_tpot.labels(**labels).observe(
                    (end - request.first_token_at) / (len(request.output) - 1)
                )

    def token(self, interval: float) -> None:
        """One decode step's latency for one request (SGLang observes it per new token)."""
        self.inter_token_latency.observe(interval)

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
