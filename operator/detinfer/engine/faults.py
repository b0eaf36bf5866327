"""Planted faults: the known ways a deterministic server still breaks, one switch each.

A TEST TOOL, NOT A SETTING: `detinfer engine --enable-deterministic-inference --planted-fault
NAME[=N]` keeps the batch-invariant engine and plants one narrow nondeterminism in it, as
SGLang's and vLLM's issues report them, so that a validator can be shown to catch each class
(tests/engine/test_faults.py, `make bench-faults`). The operator refuses the flag in
spec.engine.extraArgs.

Each fault is real arithmetic on its own path, never a scripted answer: where its trigger holds,
the step's matmuls add their inner dimension in two halves (kernels.PlantedKernels: another order of
the same additions, so other last bits, as a kernel that picks another split does), or the
sampler draws from the engine's generator instead of the request's seed. Where the trigger does
not hold, the engine computes exactly what the clean engine computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scheduler imports this module
    from detinfer.engine.scheduler import Request

FLAG = "--planted-fault"


@dataclass(frozen=True)
class FaultClass:
    name: str
    what: str
    """When it strikes."""
    seen_in: str
    """Where the class was reported (public issues), for the docs."""
    value: str | None = None
    """What N means for a fault that takes one (NAME=N); None: the fault takes none."""
    default: int | None = None


CLASSES: dict[str, FaultClass] = {
    c.name: c
    for c in (
        FaultClass(
            "batch-threshold",
            "steps of more than N sequences add in another order",
            "SGLang issues 19431 (past 8) and 20509 (32 vs 33); CUDA-graph and tile sizes",
            "sequences",
            100,
        ),
        FaultClass(
            "concurrency",
            "steps that batch requests of separate arrivals (continuous batching) add in "
            "another order; a list batch, one arrival, never triggers it",
            "continuous batching: SGLang's and vLLM's batch-invariance work",
        ),
        FaultClass(
            "cache-hit",
            "a prefill that takes a prefix from the cache adds in another order",
            "SGLang issue 34683 (a radix-cache hit flips greedy output)",
        ),
        FaultClass(
            "prefill-decode",
            "decode steps always add in another order than prefill (deterministic, but decode "
            "logprobs differ from the prefill logprobs of the same tokens)",
            "SGLang's test_deterministic p_vs_d mode; RL trainers' logprob recomputation",
        ),
        FaultClass(
            "long-context",
            "steps of more than one sequence where one holds more than N tokens add in another "
            "order",
            "split-KV tile sizes that act only on long sequences",
            "tokens",
            6000,
        ),
        FaultClass(
            "replica-skew",
            "this replica always adds in another order (another GPU, driver or TP size)",
            "SGLang issue 31261 (TP 2)",
        ),
        FaultClass(
            "drift",
            "after N generation requests every step adds in another order (an autotuner "
            "switching kernels)",
            "kernel autotuning after warm-up",
            "requests",
            100,
        ),
        FaultClass(
            "seed-ignored",
            "sampling at temperature > 0 ignores the request's seed (draws from the engine's "
            "generator)",
            "seeded sampling that repeats only by chance",
        ),
        FaultClass(
            "openai-seed-ignored",
            "POST /v1/completions ignores `seed`; /generate honours `sampling_seed`",
            "SGLang issue 15481",
        ),
        FaultClass(
            "flag-without-effect",
            "--enable-deterministic-inference is accepted and reported, but the kernels are the "
            "batch-variant ones",
            "SGLang issue 36291",
        ),
    )
}


@dataclass(frozen=True)
class PlantedFault:
    name: str
    value: int | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


def parse_fault(text: str) -> PlantedFault:
    """`NAME` or `NAME=N`; ValueError naming the flag and the value otherwise."""
    name, sep, raw = text.partition("=")
    fault = CLASSES.get(name)
    if fault is None:
        raise ValueError(f"{FLAG} {text!r}: not a planted fault; choose from {', '.join(CLASSES)}")
    if fault.value is None:
        if sep:
            raise ValueError(f"{FLAG} {text!r}: {name} takes no value")
        return PlantedFault(name)
    if not sep:
        return PlantedFault(name, fault.default)
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(f"{FLAG} {text!r}: N ({fault.value}) must be a whole number of at least 1")
    return PlantedFault(name, int(raw))


class Faults:
    """The planted faults of one engine and their triggers; used on the engine's thread (the
    request count under the engine's lock, at submission)."""

    def __init__(self, planted: Sequence[PlantedFault] = ()) -> None:
        self.planted = {f.name: f for f in planted}
        self.requests = 0

    def __bool__(self) -> bool:
        return bool(self.planted)

    def has(self, name: str) -> bool:
        return name in self.planted

    def value(self, name: str) -> int:
        value = self.planted[name].value
        assert value is not None, f"{name} takes a value"
        return value

    def submitted(self, count: int) -> None:
        self.requests += count

    def reorders(self, batch: Sequence[Request], prefill: bool) -> bool:
        """Whether this step's matmuls add in the other order."""
        if self.has("replica-skew"):
            return True
        if self.has("drift") and self.requests > self.value("drift"):
            return True
        if self.has("batch-threshold") and len(batch) > self.value("batch-threshold"):
            return True
        if self.has("prefill-decode") and not prefill:
            return True
        if self.has("cache-hit") and prefill and any(r.cached_tokens > 0 for r in batch):
            return True
        if self.has("concurrency") and len({r.arrival for r in batch}) > 1:
            return True
        return (
            self.has("long-context")
            and len(batch) > 1
            and any(len(r.prompt) + len(r.output) > self.value("long-context") for r in batch)
        )

    def ignores_seed(self, route: str) -> bool:
        """Whether a sampled request on `route` ("generate" or "openai") ignores its seed."""
        return self.has("seed-ignored") or (self.has("openai-seed-ignored") and route == "openai")
