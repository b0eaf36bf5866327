"""The suites: what each sends to one endpoint and how its outputs are tallied.

Every output is compared with the first output of the same prompt and sampling parameters that
this endpoint gave anywhere in the run (the reference, kept in a Ledger): the probe's output in
a batch of 33 is held to its output alone in a batch of 1, in the Mixed suite to the same, and
so on. A suite's unique outputs are the distinct outputs of its most varied prompt, the
reference included, so 1 means every sample was identical to the last bit; it passes only when
its outputs also held evidence (detinfer.validator.evidence).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from detinfer.api.spec import Suite
from detinfer.api.status import SuiteOutcome
from detinfer.validator.client import EngineClient, OpenAIClient, Sampling
from detinfer.validator.compare import Output, Prompt, describe_divergence, fingerprint
from detinfer.validator.config import EndpointSpec, Protocol, ValidatorConfig
from detinfer.validator.errors import CouldNotTest, ProtocolError
from detinfer.validator.evidence import Evidence
from detinfer.validator.prompts import (
    FINGERPRINT_MAX_NEW_TOKENS,
    FINGERPRINT_PROMPTS,
    FINGERPRINT_SEED,
    PROBE_PROMPT,
    RADIX_NEW_TOKENS,
    RADIX_PROMPT_LOGPROBS,
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_P,
    SGLANG_DEFAULT_SAMPLING_SEED,
    prompt_name,
)
from detinfer.validator.schedule import (
    FINGERPRINT,
    LONG_CONTEXT_NEW_TOKENS,
    LONG_CONTEXT_SHORT_TOKENS,
    batch_new_tokens,
    cache_marker,
    concurrent_prompts,
    long_context_batches,
    long_context_lengths,
    mixed_batches,
    prefill_decode_trials,
    prefix_batches,
    radix_prompt,
    sampling_alone_requests,
    sampling_batches,
    sampling_concurrent_requests,
    single_batches,
    unseeded_batches,
)
from detinfer.validator.server_facts import (
    EngineFacts,
    Limits,
    check,
    check_model,
    engine_facts,
    limits,
    model_changes,
)

FIRST_DIVERGENCE_LIMIT = 512
FIRST_OWN_TRIAL = 1000
"""radix_prompt's trials from here on are PrefillDecode's prompts, and the one before is
LongContext's short prompt (RadixCache's are 0 to trials - 1): no suite finds another's
sequences in the cache."""


class Progress:
    """Where a run reports its steps; this one ignores them (the terminal has its own)."""

    def begin(self, totals: dict[str, int]) -> None:
        """`totals`: generation requests planned per endpoint."""

    def advance(self, endpoint: str, steps: int = 1) -> None:
        pass

    def suite_done(self, endpoint: str, record: SuiteRecord) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass
class SuiteRecord:
    """The outcome of one suite on one endpoint (or, for CrossReplica, between endpoints)."""

    name: str
    samples: int = 0
    unique_outputs: int = 0
    first_divergence: str | None = None
    skipped: str | None = None
    """Why the suite did not run; a skipped suite has no samples and does not pass."""
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    failed_endpoints: list[str] = field(default_factory=list)
    complete: bool = False
    """False while the suite runs, and for a suite an error cut short."""
    evidence: Evidence = field(default_factory=Evidence)

    @property
    def diverged(self) -> bool:
        return self.first_divergence is not None or self.unique_outputs > 1

    @property
    def outcome(self) -> SuiteOutcome:
        # Two outputs that differ prove nondeterminism whatever else they lack; identical
        # outputs prove determinism only when they hold something.
        if self.diverged:
            return SuiteOutcome.FAILED
        if self.skipped:
            return SuiteOutcome.SKIPPED
        if self.evidence.missing is not None:
            return SuiteOutcome.COULD_NOT_TEST
        return SuiteOutcome.PASSED

    @property
    def passed(self) -> bool:
        return self.outcome == SuiteOutcome.PASSED


@dataclass(frozen=True)
class Reference:
    output: Output
    suite: str
    label: str


class Ledger:
    """The first output this endpoint gave for each (prompt, sampling) in the run."""

    def __init__(self) -> None:
        self.references: dict[tuple, Reference] = {}

    def remember(self, key: tuple, output: Output, suite: str, label: str) -> Reference:
        return self.references.setdefault(key, Reference(output, suite, label))


class Tally:
    """Counts a suite's samples and distinct outputs, and keeps its first divergence."""

    def __init__(self, record: SuiteRecord, ledger: Ledger) -> None:
        self.record = record
        self.ledger = ledger
        self._seen: dict[tuple, set[tuple]] = {}

    def add(
        self, prompt: Prompt, sampling: Sampling, output: Output, label: str, extra: tuple = ()
    ) -> None:
        key = (prompt, sampling.key, extra)
        reference = self.ledger.remember(key, output, self.record.name, label)
        seen = self._seen.setdefault(key, {reference.output.key})
        seen.add(output.key)
        self.record.samples += 1
        self.record.evidence.add(key, output, label)
        self.record.unique_outputs = max(self.record.unique_outputs, len(seen))
        if self.record.first_divergence is None:
            detail = describe_divergence(reference.output, output)
            if detail is not None:
                where = (
                    reference.label
                    if reference.suite == self.record.name
                    else f"{reference.suite} {reference.label}"
                )
                self.record.first_divergence = clip(
                    f"{label} vs {where} ({prompt_name(prompt)}): {detail}"
                )


class EndpointRun:
    """One endpoint: `prepare` (ready, server information, expectations), then `run_suites`
    (the fingerprint and the suites, in order)."""

    def __init__(
        self,
        client: EngineClient,
        config: ValidatorConfig,
        progress: Progress,
        nonce: str = "",
    ) -> None:
        self.client = client
        self.config = config
        self.progress = progress
        self.nonce = nonce
        """The run's own text at the start of the cache suites' prompts (the same on every
        endpoint, so that CrossReplica compares them): no server has seen those prompts
        before, so nothing of them is cached from earlier runs or other clients' traffic, and
        no cache flush is needed (SGLang refuses one while requests run)."""
        self.name = client.name
        self.ledger = Ledger()
        self.records: list[SuiteRecord] = []
        self.fingerprint: str | None = None
        self.info: dict[str, Any] = {}
        """The named fields of what the server said about itself (server_facts.KEPT_FIELDS)."""
        self.facts = EngineFacts()
        self.limits = Limits()
        """The bounds the server reports (its largest batch, its context), which Single and
        LongContext probe up to."""
        self.mismatches: list[str] = []
        """How the server contradicts the expectations (--expect-*), or how its model changed
        during the run: the verdict is ServerMismatch."""
        self.unchecked: list[str] = []
        """Expectations of /model_info that the server's answers could not confirm."""
        self.current = "the wait for GET /health"
        self.sampling = Sampling(config.max_new_tokens, config.temperature, config.sampling_seed)

    async def prepare(self) -> None:
        """Wait for the server, read what it says about itself, hold it to the expectations."""
        await self.client.wait_ready(self.config.wait_seconds)
        self.current = "the requests for server information"
        self.info = await self.client.server_info()
        reported = self.info.get("serverInfo")
        error = reported.get("error") if isinstance(reported, dict) else None
        self.facts = engine_facts(None if error else reported, self.info.get("modelInfo"))
        self.limits = limits(None if error else reported, self.info.get("modelInfo"))
        self._check_model(self.info.get("modelInfo"), "")
        if self.config.expect.server_given:
            self._check_server(reported, error)

    def _check_server(self, reported: Any, error: str | None) -> None:
        """/server_info against the expectations: a fact it does not report cannot be checked."""
        expect = self.config.expect
        if reported is None or error is not None:
            raise CouldNotTest(
                f"{self.name}: cannot check the deployment (--expect-*): "
                f"{error or 'the protocol has no /server_info'}"
            )
        wrong, unknown = check(reported, expect)
        self.mismatches.extend(wrong)
        if unknown and not self.mismatches:
            raise CouldNotTest(
                f"{self.name}: cannot check the deployment: the server does not report "
                + "; ".join(unknown)
            )

    def _check_model(self, model_info: dict[str, Any] | None, when: str) -> None:
        """/model_info against the expectations; what it lacks is noted, not a failure (older
        releases have no weight_version)."""
        if model_info is None:
            return
        wrong, unknown = check_model(model_info, self.config.expect, when)
        self.mismatches.extend(wrong)
        self.unchecked.extend(u for u in unknown if u not in self.unchecked)

    async def confirm_model(self) -> None:
        """Read /model_info again after the suites: the model must still be the expected one,
        and the one of the first reading (no weight update in between)."""
        self.current = "the request for model information"
        last = await self.client.model_info()
        self.current = "done"
        first = self.info.get("modelInfo")
        if last is None or first is None:
            return
        self.info["modelInfoAtEnd"] = last
        self._check_model(last, " at the end of the run")
        self.mismatches.extend(model_changes(first, last))
        if "error" in last and "error" not in first:
            self.unchecked.append(f"that the model did not change ({last['error']})")

    async def run_suites(self) -> None:
        await self._step(FINGERPRINT, run_fingerprint)
        for suite in Suite:
            if suite in self.config.suites and suite in SUITES:
                await self._step(suite.value, SUITES[suite])
                if self.config.stop_at_first_failure and self.records[-1].diverged:
                    break
        self.current = "done"

    @property
    def finished(self) -> bool:
        return self.current == "done"

    async def _step(self, name: str, body: Callable[[EndpointRun, Tally], Awaitable[None]]) -> None:
        self.current = name
        record = SuiteRecord(name)
        self.records.append(record)
        requests, generated, prompt = (
            self.client.requests,
            self.client.generated_tokens,
            self.client.prompt_tokens,
        )
        started = time.monotonic()
        await body(self, Tally(record, self.ledger))
        record.seconds = time.monotonic() - started
        record.requests = self.client.requests - requests
        record.generated_tokens = self.client.generated_tokens - generated
        record.prompt_tokens = self.client.prompt_tokens - prompt
        record.complete = True
        if record.diverged:
            record.failed_endpoints = [self.name]
        self.progress.suite_done(self.name, record)

    async def batch(self, prompts: Sequence[Prompt], sampling: Sampling, **kw: Any) -> list[Output]:
        outputs = await self.client.generate(prompts, sampling, **kw)
        self.progress.advance(self.name)
        return outputs


async def run_fingerprint(run: EndpointRun, tally: Tally) -> None:
    sampling = Sampling(FINGERPRINT_MAX_NEW_TOKENS, 0.0, FINGERPRINT_SEED)
    outputs = await run.batch(list(FINGERPRINT_PROMPTS), sampling)
    for k, (prompt, output) in enumerate(zip(FINGERPRINT_PROMPTS, outputs, strict=True)):
        tally.add(prompt, sampling, output, f"prompt {k + 1}")
    # A hash of outputs that hold nothing would be recorded and held to as if it meant a model.
    run.fingerprint = fingerprint(outputs) if tally.record.evidence.missing is None else None


async def run_single(run: EndpointRun, tally: Tally) -> None:
    """The probe alone and in batches up to the server's own maximum; past 33 with few tokens,
    held to the probe alone with as few."""
    sizes = single_batches(run.config, run.limits.max_running_requests)
    for size in sizes:
        sampling = dataclasses.replace(
            run.sampling, max_new_tokens=batch_new_tokens(run.config, size)
        )
        key = (PROBE_PROMPT, sampling.key, ())
        if size > 1 and key not in run.ledger.references:
            # The reference of the large batches' few tokens: the probe alone.
            output = (await run.batch([PROBE_PROMPT], sampling))[0]
            tally.add(PROBE_PROMPT, sampling, output, f"alone, {sampling.max_new_tokens} tokens")
        outputs = await run.batch([PROBE_PROMPT] * size, sampling)
        for k, output in enumerate(outputs):
            tally.add(PROBE_PROMPT, sampling, output, f"batch of {size}, copy {k + 1}")
    if run.limits.max_running_requests and run.config.max_batch_size is None:
        tally.record.notes.append(
            f"batches up to the server's max_running_requests, {run.limits.max_running_requests}"
        )


async def run_mixed(run: EndpointRun, tally: Tally) -> None:
    for i, prompts in enumerate(mixed_batches(run.config.trials)):
        outputs = await run.batch(prompts, run.sampling)
        for slot, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
            tally.add(prompt, run.sampling, output, f"mixed batch {i + 1}{_slot(prompts, slot)}")


async def run_prefix(run: EndpointRun, tally: Tally) -> None:
    for i, prompts in enumerate(prefix_batches(run.config.trials, run.nonce)):
        outputs = await run.batch(prompts, run.sampling)
        for slot, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
            tally.add(prompt, run.sampling, output, f"prefix batch {i + 1}{_slot(prompts, slot)}")


def _slot(prompts: Sequence[Prompt], slot: int) -> str:
    return " (alone)" if len(prompts) == 1 else f" ({len(prompts)} prompts), slot {slot + 1}"


async def run_radix_cache(run: EndpointRun, tally: Tally) -> None:
    """Prefill prompt+output from scratch and again from the cache; both must agree bitwise."""
    if not run.client.accepts_token_ids:
        tally.record.skipped = f"the {run.client.protocol.value} protocol cannot send token ids"
        return
    if run.config.sends_cache_prompt is False:
        tally.record.skipped = (
            "prefix cache off: --cache-prompt off asks llama-server not to reuse its cache"
        )
        return
    if run.facts.radix_cache is False:
        # Nothing would come from the cache: a pass would rest on nothing.
        tally.record.skipped = (
            "prefix cache off: GET /server_info says disable_radix_cache is true (SGLang turns "
            "it off itself with FlashInfer in deterministic mode)"
        )
        return
    trials = run.config.trials
    prefill = Sampling(RADIX_NEW_TOKENS, run.config.temperature, run.config.sampling_seed)
    hits, stale = 0, 0
    for t in range(trials):
        prompt = radix_prompt(run.config.sampling_seed, t)
        first = (await run.batch([prompt], run.sampling))[0]
        run.ledger.remember(
            (prompt, run.sampling.key, ()), first, tally.record.name, f"trial {t + 1} generation"
        )
        # A client that accepts token ids answers with token ids. The marker makes the sequence
        # one the server has never seen (the generation left prompt+output in its cache), so
        # the first prefill computes it from scratch without a flush.
        sequence = cache_marker(run.nonce, t) + prompt + cast(tuple[int, ...], first.tokens or ())
        start = max(0, len(sequence) - RADIX_PROMPT_LOGPROBS)
        scratch = (await run.batch([sequence], prefill, logprob_start_len=start))[0]
        cached = (await run.batch([sequence], prefill, logprob_start_len=start))[0]
        extra = ("logprob_start_len", start)
        tally.add(sequence, prefill, scratch, f"trial {t + 1}, prefilled from scratch", extra)
        tally.add(
            sequence,
            prefill,
            cached,
            f"trial {t + 1}, prefilled with {cached.cached_tokens or 0} cached tokens",
            extra,
        )
        hits += (cached.cached_tokens or 0) > 0
        # The marker's ids come from a range of 255, so one shared first id with some cached
        # sequence is chance; more than one means the server saw this start before.
        stale += (scratch.cached_tokens or 0) > 1
    field = run.client.cached_tokens_field
    tally.record.notes.append(f"{hits} of {trials} second prefills used the cache ({field} > 0)")
    if not run.client.gives_prompt_logprobs:
        tally.record.notes.append(
            f"the {run.client.protocol.value} protocol gives no prompt logprobs: the prefills' "
            "output tokens and logprobs were compared"
        )
    if hits == 0:
        # Cached and uncached prefills were never compared: not a pass.
        tally.record.skipped = (
            f"prefix cache off: none of {trials} second prefills used the cache ({field} 0)"
        )
    if stale:
        tally.record.notes.append(
            f"{stale} prefills of never-seen sequences reported more than one cached token (a "
            "shared marker start, or a server that counts otherwise)"
        )


async def run_prefill_decode(run: EndpointRun, tally: Tally) -> None:
    """Generate from token ids (decode logprobs), then prefill prompt + output and compare the
    prompt logprobs of the output positions with the decode logprobs, bitwise: what an RL
    trainer's recomputation of the rollout's logprobs needs (SGLang's test_deterministic has
    this as its p_vs_d mode)."""
    if not (run.client.accepts_token_ids and run.client.gives_prompt_logprobs):
        tally.record.skipped = (
            f"the {run.client.protocol.value} protocol gives no prompt logprobs to compare "
            "with the decode logprobs"
        )
        return
    prefill = Sampling(1, run.config.temperature, run.config.sampling_seed)
    for t in range(prefill_decode_trials(run.config)):
        prompt = radix_prompt(run.config.sampling_seed, FIRST_OWN_TRIAL + t)
        generated = (await run.batch([prompt], run.sampling))[0]
        tokens = cast(tuple[int, ...], generated.tokens or ())
        recomputed = (await run.batch([prompt + tokens], prefill, logprob_start_len=len(prompt)))[0]
        pairs = recomputed.input_logprobs or ()
        if tuple(tid for _, tid in pairs) != tokens:
            raise ProtocolError(
                f"{run.name}: POST /generate with logprob_start_len {len(prompt)} answered "
                f"{len(pairs)} prompt logprobs for the {len(tokens)} tokens generated before, "
                "or for other tokens"
            )
        key = (prompt, run.sampling.key, ("decode vs prefill",))
        decode = Output("", tokens, generated.logprobs)
        again = Output(
            "",
            tuple(tid for _, tid in pairs),
            tuple(lp for lp, _ in pairs),
        )
        tally.add(key[0], run.sampling, decode, f"trial {t + 1}, decode logprobs", key[2])
        tally.add(key[0], run.sampling, again, f"trial {t + 1}, prefill logprobs", key[2])


async def run_long_context(run: EndpointRun, tally: Tally) -> None:
    """Prompts just past each pinned tile size and as long as the context allows, each alone,
    then all together with a short one (twice, in turn): outputs must not depend on the
    company of long sequences."""
    if not run.client.accepts_token_ids:
        tally.record.skipped = (
            f"the {run.client.protocol.value} protocol cannot send token ids of exact length"
        )
        return
    sampling = dataclasses.replace(
        run.sampling, max_new_tokens=min(run.config.max_new_tokens, LONG_CONTEXT_NEW_TOKENS)
    )
    lengths = long_context_lengths(run.limits.context_length, sampling.max_new_tokens)
    if not lengths:
        tally.record.skipped = (
            "the server reports no context length (context_length in /server_info or "
            "/model_info), or one too short for a prompt past 2048 tokens"
        )
        return
    short = radix_prompt(run.config.sampling_seed, FIRST_OWN_TRIAL - 1)[:LONG_CONTEXT_SHORT_TOKENS]
    for i, prompts in enumerate(long_context_batches(lengths, short, run.nonce)):
        outputs = await run.batch(prompts, sampling)
        for slot, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
            label = f"long-context batch {i + 1}{_slot(prompts, slot)}"
            tally.add(prompt, sampling, output, label)
    tally.record.notes.append(
        f"prompts of {', '.join(map(str, lengths))} tokens (context {run.limits.context_length})"
    )


async def run_concurrent(run: EndpointRun, tally: Tally) -> None:
    """Each prompt once alone, then all requests at once for the server to batch as it likes."""
    prompts = concurrent_prompts(run.config.trials)
    for prompt in dict.fromkeys(prompts):
        output = await run.client.generate_one(prompt, run.sampling)
        run.progress.advance(run.name)
        tally.add(prompt, run.sampling, output, "a request alone")

    async def one(prompt: Prompt) -> Output:
        output = await run.client.generate_one(prompt, run.sampling)
        run.progress.advance(run.name)
        return output

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(p)) for p in prompts]
    for i, (prompt, task) in enumerate(zip(prompts, tasks, strict=True)):
        tally.add(
            prompt, run.sampling, task.result(), f"concurrent request {i + 1} of {len(prompts)}"
        )


async def run_sampling(run: EndpointRun, tally: Tally) -> None:
    """Seeded sampling at temperature > 0 with top_p, as RL rollouts use it: the probe with the
    run's seed in batches of many sizes, then without a seed, then (with the other prompts)
    alone and as concurrent requests. Every output of one (prompt, seed) must be the same to the
    last bit; outputs without a seed must be the same as each other where the engine promises
    it (SGLang's deterministic mode samples them with its fixed default seed), and are reported,
    not judged, elsewhere. A protocol without a seed skips the suite."""
    traits = run.client.protocol.traits
    if not traits.seed:
        tally.record.skipped = (
            f"the {run.client.protocol.value} protocol has no seed: nothing promises that "
            "sampled outputs repeat"
        )
        return
    new, seed = run.config.max_new_tokens, run.config.sampling_seed
    seeded = Sampling(new, SAMPLING_TEMPERATURE, seed, SAMPLING_TOP_P)
    unseeded = Sampling(new, SAMPLING_TEMPERATURE, None, SAMPLING_TOP_P)

    def sampling_of(with_seed: bool) -> Sampling:
        return seeded if with_seed else unseeded

    def how(with_seed: bool) -> str:
        return f"sampling_seed {seed}" if with_seed else "no seed"

    # Unseeded outputs are judged only where the engine promises they repeat; elsewhere
    # they are counted apart (their own ledger) and reported in a note.
    aside = Tally(SuiteRecord(tally.record.name), Ledger())
    unseeded_tally = tally if traits.unseeded_repeat else aside

    def tally_of(with_seed: bool) -> Tally:
        return tally if with_seed else unseeded_tally

    for with_seed, sizes in (
        (True, sampling_batches(run.config)),
        (False, unseeded_batches(run.config)),
    ):
        for size in sizes:
            outputs = await run.batch([PROBE_PROMPT] * size, sampling_of(with_seed))
            for k, output in enumerate(outputs):
                label = f"{how(with_seed)}, batch of {size}, copy {k + 1}"
                tally_of(with_seed).add(PROBE_PROMPT, sampling_of(with_seed), output, label)
    for prompt, with_seed in sampling_alone_requests(run.config.trials):
        output = await run.client.generate_one(prompt, sampling_of(with_seed))
        run.progress.advance(run.name)
        label = f"{how(with_seed)}, a request alone"
        tally_of(with_seed).add(prompt, sampling_of(with_seed), output, label)

    requests = sampling_concurrent_requests(run.config.trials)

    async def one(prompt: Prompt, with_seed: bool) -> Output:
        output = await run.client.generate_one(prompt, sampling_of(with_seed))
        run.progress.advance(run.name)
        return output

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(p, s)) for p, s in requests]
    for i, ((prompt, with_seed), task) in enumerate(zip(requests, tasks, strict=True)):
        label = f"{how(with_seed)}, concurrent request {i + 1} of {len(requests)}"
        tally_of(with_seed).add(prompt, sampling_of(with_seed), task.result(), label)

    if run.client.protocol == Protocol.SGLANG:
        await _openai_route_seed(run, tally, seeded)

    greedy = run.ledger.references.get((PROBE_PROMPT, run.sampling.key, ()))
    sampled = run.ledger.references.get((PROBE_PROMPT, seeded.key, ()))
    if greedy and sampled and _same_tokens(greedy.output, sampled.output):
        tally.record.notes.append(
            f"the probe sampled with seed {seed} at temperature {SAMPLING_TEMPERATURE} gave its "
            f"greedy output ({greedy.suite} {greedy.label}) token for token: the server may not "
            "have sampled, and then this pass says nothing about seeded sampling"
        )
    if aside.record.samples:
        kept = aside.record
        tally.record.notes.append(
            f"without a seed (not judged: the {run.client.protocol.value} protocol's engines "
            f"promise nothing for unseeded requests): {kept.samples} samples, at most "
            f"{kept.unique_outputs} distinct outputs of one prompt"
            + (f"; first difference: {kept.first_divergence}" if kept.first_divergence else "")
        )
    if seed == SGLANG_DEFAULT_SAMPLING_SEED:
        # Informative only: which seed a server uses by default is its own choice.
        with_42 = run.ledger.references[(PROBE_PROMPT, seeded.key, ())].output
        without = unseeded_tally.ledger.references[(PROBE_PROMPT, unseeded.key, ())].output
        same = "the same output as" if with_42.key == without.key else "another output than"
        tally.record.notes.append(
            f"the probe without a seed gave {same} with sampling_seed 42 (SGLang's default in "
            "deterministic mode)"
        )


OPENAI_ROUTE = "POST /v1/completions"


async def _openai_route_seed(run: EndpointRun, tally: Tally, seeded: Sampling) -> None:
    """SGLang serves the OpenAI API beside /generate, and maps its `seed` to `sampling_seed`:
    the seeded probe goes there too, alone twice and in a batch of two, and must repeat (a
    route that ignores the seed was SGLang issue 15481). A server without the route is noted."""
    side = OpenAIClient(EndpointSpec(run.name, run.client.url), run.config)
    async with side:
        try:
            await side.server_info()
        except CouldNotTest as exc:
            tally.record.notes.append(f"the OpenAI route was not tested: {exc}")
            return
        outputs = [await side.generate_one(PROBE_PROMPT, seeded) for _ in range(2)]
        outputs += await side.generate([PROBE_PROMPT, PROBE_PROMPT], seeded)
    labels = ("alone", "alone again", "batch of 2, copy 1", "batch of 2, copy 2")
    for label, output in zip(labels, outputs, strict=True):
        tally.add(PROBE_PROMPT, seeded, output, f"{OPENAI_ROUTE}, {label}", (OPENAI_ROUTE,))
    run.progress.advance(run.name, 3)
    # The suite's counts are the main client's; the route's requests are added to them.
    run.client.requests += side.requests
    run.client.generated_tokens += side.generated_tokens
    run.client.prompt_tokens += side.prompt_tokens


def _same_tokens(a: Output, b: Output) -> bool:
    """The same tokens (or text, where there are none), whatever the logprobs."""
    if a.tokens is not None and b.tokens is not None:
        return a.tokens == b.tokens
    return a.text == b.text


SUITES: dict[Suite, Callable[[EndpointRun, Tally], Awaitable[None]]] = {
    Suite.SINGLE: run_single,
    Suite.MIXED: run_mixed,
    Suite.PREFIX: run_prefix,
    Suite.RADIX_CACHE: run_radix_cache,
    Suite.PREFILL_DECODE: run_prefill_decode,
    Suite.LONG_CONTEXT: run_long_context,
    Suite.CONCURRENT: run_concurrent,
    Suite.SAMPLING: run_sampling,
}
"""The suites that run on one endpoint; CrossReplica compares endpoints afterwards."""


def cross_replica(runs: Sequence[EndpointRun], expected_fingerprint: str | None) -> SuiteRecord:
    """Every prompt that all endpoints answered must have the same output on each, bitwise."""
    record = SuiteRecord(Suite.CROSS_REPLICA.value)
    if len(runs) < 2:
        record.skipped = "one endpoint: there is no other replica to compare with"
        return record
    first = runs[0]
    keys = [k for k in first.ledger.references if all(k in r.ledger.references for r in runs[1:])]
    for key in keys:
        reference = first.ledger.references[key]
        distinct = {r.ledger.references[key].output.key for r in runs}
        for r in runs:
            theirs = r.ledger.references[key]
            record.evidence.add(key, theirs.output, f"{r.name}, {theirs.suite} {theirs.label}")
        record.samples += len(runs)
        record.unique_outputs = max(record.unique_outputs, len(distinct))
        if record.first_divergence is None and len(distinct) > 1:
            other = next(
                r for r in runs if r.ledger.references[key].output.key != reference.output.key
            )
            detail = describe_divergence(reference.output, other.ledger.references[key].output)
            record.first_divergence = clip(
                f"{other.name} vs {first.name}, {prompt_name(key[0])} "
                f"({reference.suite} {reference.label}): {detail}"
            )
    if record.diverged:
        matching = [r.name for r in runs if r.fingerprint == expected_fingerprint]
        # Which replica is wrong cannot be told from two that disagree; only the expected
        # fingerprint can clear some of them. Otherwise all fail (detinfer fails closed).
        if expected_fingerprint and matching and len(matching) < len(runs):
            record.failed_endpoints = [r.name for r in runs if r.name not in matching]
        else:
            record.failed_endpoints = [r.name for r in runs]
    return record


def clip(text: str, limit: int = FIRST_DIVERGENCE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
