"""Seeded sampling in the batching engine, as SGLang does it: per request and batch-invariant in
deterministic mode (a missing seed is 42), and from one generator that ignores the seed in
default mode."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from detinfer.engine.config import EngineArgs  # noqa: E402
from detinfer.engine.main import build_engine  # noqa: E402
from detinfer.engine.sampling import SamplingParams  # noqa: E402
from detinfer.engine.scheduler import Engine, Event, Request  # noqa: E402
from detinfer.engine.tokenizer import encode  # noqa: E402

SAMPLED = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=24, ignore_eos=True)
PROBE = encode("Tell me about Richard Feynman: ")
COMPANY = [encode("Hi."), encode("List the first primes: " * 20), encode("A " * 300)]


class Collector:
    """Requests submitted together; waits for all of them to finish."""

    def __init__(self) -> None:
        self.done = threading.Semaphore(0)

    def request(self, prompt: list[int], seed: int | None) -> Request:
        def emit(event: Event) -> None:
            assert event.kind != "error", event.message
            if event.kind == "finish":
                self.done.release()

        return Request(prompt, SAMPLED, emit, seed=seed)

    def wait(self, n: int) -> None:
        for _ in range(n):
            assert self.done.acquire(timeout=120), "a request did not finish"


def run(engine: Engine, *batches: list[tuple[list[int], int | None]]) -> list[list[Request]]:
    """Each batch submitted at once, the next while the previous one decodes."""
    collector = Collector()
    submitted = []
    for batch in batches:
        requests = [collector.request(prompt, seed) for prompt, seed in batch]
        engine.submit(requests)
        submitted.append(requests)
        while batch is not batches[-1] and not any(r.output for r in requests):
            threading.Event().wait(0.001)  # the next batch joins while this one decodes
    collector.wait(sum(len(b) for b in batches))
    return submitted


def sample(request: Request) -> tuple:
    return tuple(request.output), tuple(request.output_logprobs)  # floats: bit for bit


@pytest.fixture
def engine_of():
    started: list[Engine] = []

    def make(deterministic: bool, random_seed: int = 3) -> Engine:
        engine, _ = build_engine(
            EngineArgs(
                random_seed=random_seed,
                enable_deterministic_inference=deterministic,
                disable_radix_cache=True,
            )
        )
        engine.start()
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.stop()


def test_a_seeded_sample_is_the_same_in_any_batch_in_deterministic_mode(engine_of):
    engine = engine_of(True)
    [[alone]] = run(engine, [(PROBE, 1234)])
    # In one batch with other prompts and seeds, and joining a batch that already decodes.
    [batched] = run(engine, [(p, 7 + i) for i, p in enumerate(COMPANY)] + [(PROBE, 1234)] * 3)
    _, [joined] = run(engine, [(p, 5) for p in COMPANY * 3], [(PROBE, 1234)])
    assert {sample(alone), sample(joined)} | {sample(r) for r in batched[-3:]} == {sample(alone)}
    # The seed decides the sample: another seed, another sample; none is 42.
    other, unseeded, with_42 = (run(engine, [(PROBE, s)])[0][0] for s in (7, None, 42))
    assert sample(other) != sample(alone)
    assert sample(unseeded) == sample(with_42)
    assert unseeded.seed == 42


def test_default_mode_ignores_the_seed_and_draws_from_the_engine_generator(engine_of):
    first = engine_of(False, random_seed=3)
    [[a]], [[b]] = run(first, [(PROBE, 1234)]), run(first, [(PROBE, 1234)])
    # The same request twice: the generator has moved on, as torch's does in SGLang.
    assert sample(a) != sample(b)
    assert a.seed == 1234  # kept for the record, not used
    # A fresh engine with the same --random-seed starts its generator where the first did.
    [[again]] = run(engine_of(False, random_seed=3), [(PROBE, 99)])
    assert tuple(again.output) == tuple(a.output)
