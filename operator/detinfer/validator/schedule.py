"""What each suite sends: batch sizes, batch contents, and the tokens that costs. Pure functions."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from detinfer.api.spec import Suite
from detinfer.validator.compare import Prompt
from detinfer.validator.config import Protocol, ValidatorConfig
from detinfer.validator.prompts import (
    FILLERS,
    FINGERPRINT_MAX_NEW_TOKENS,
    FINGERPRINT_PROMPTS,
    LONG_TEXT,
    PREFIX_LENGTHS,
    PROBE_PROMPT,
    RADIX_NEW_TOKENS,
    RADIX_PROMPT_TOKENS,
    RADIX_TOKEN_RANGE,
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_P,
)

SAMPLING_SMALL_BATCH_BOUND = 9
SAMPLING_LARGE_BATCH = 17
PREFILL_DECODE_PROMPTS = 4
"""PrefillDecode's prompts at most: a kernel that differs between prefill and decode differs at
every decode step, so a few prompts of --max-new-tokens tokens each show it."""
LARGE_BATCH_NEW_TOKENS = 8
"""Tokens each sequence of a Single batch larger than FULL_TOKENS_BATCH generates: a batch of
257 at 64 tokens would cost more than the rest of the run. A change of kernel at a batch size
shows from the first token's logprob on."""
FULL_TOKENS_BATCH = 33
"""The largest Single batch whose sequences generate --max-new-tokens (the default bound, 2 x
16 trials + 1)."""
LONG_CONTEXT_TILES = (2048, 4096)
"""The split tile sizes deterministic SGLang pins (prefill and decode; SGLang's
SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE and SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE
default to 4096): LongContext sends a prompt just past each, and one as long as the context
allows."""
LONG_CONTEXT_NEW_TOKENS = 8
PLAN_CONTEXT_LENGTH = 8192
"""The context --plan counts LongContext for (it contacts no server)."""
LONG_CONTEXT_SHORT_TOKENS = 64
"""The short prompt that keeps the long ones company."""

CACHE_MARKER_TOKENS = 8
FINGERPRINT = "Fingerprint"
"""Name of the fingerprint step in the report (it is not a Suite: it always runs)."""


def batch_size_schedule(bound: int) -> list[int]:
    """1, 2, 3, 4, then 2^k - 1, 2^k, 2^k + 1 for 2^k = 8, 16, 32, ...: every size up to `bound`.

    Kernels change how they split a reduction at batch-size boundaries (powers of two, tile and
    CUDA-graph sizes: SGLang's issues report outputs that change past 8 and between 32 and 33),
    so each boundary is probed from both sides and in between, while the sizes that cross no
    boundary (5, 6, 10-14, ...) are skipped. Up to 33 that is 13 batches instead of 33.
    """
    sizes = {1, 2, 3, 4}
    power = 8
    while power - 1 <= bound:
        sizes |= {power - 1, power, power + 1}
        power *= 2
    return sorted(s for s in sizes if s <= bound)


def single_batches(config: ValidatorConfig, server_max: int | None = None) -> list[int]:
    """Single's batch sizes: the schedule up to --max-batch-size, or without it up to the
    larger of 2 x trials + 1 and the server's own maximum batch (`server_max`, SGLang's
    max_running_requests), that maximum included."""
    if config.max_batch_size is not None or not server_max or server_max <= config.batch_size_bound:
        return batch_size_schedule(config.batch_size_bound)
    return sorted({*batch_size_schedule(server_max), server_max})


def prefill_decode_trials(config: ValidatorConfig) -> int:
    return min(config.trials, PREFILL_DECODE_PROMPTS)


def batch_new_tokens(config: ValidatorConfig, size: int) -> int:
    """Tokens per sequence in a Single batch of `size`: few past FULL_TOKENS_BATCH."""
    if size <= FULL_TOKENS_BATCH:
        return config.max_new_tokens
    return min(config.max_new_tokens, LARGE_BATCH_NEW_TOKENS)


def long_context_lengths(context_length: int | None, new_tokens: int) -> list[int]:
    """Prompt lengths (tokens) of LongContext: one past each pinned tile size and the longest
    the context allows, those that fit with `new_tokens`; none when the length is unknown."""
    if not context_length:
        return []
    room = context_length - new_tokens
    lengths = {t + 1 for t in LONG_CONTEXT_TILES if t + 1 <= room}
    if room > max(LONG_CONTEXT_TILES) + 1:
        lengths.add(room)
    return sorted(lengths)


def long_context_prompt(nonce: str, length: int) -> tuple[int, ...]:
    """`length` token ids: the run's cache marker for this length, then seeded random ids (the
    same on every endpoint of the run, never seen by a server before it)."""
    rng = random.Random(f"detinfer-long-context:{length}")
    low, high = RADIX_TOKEN_RANGE
    marker = cache_marker(nonce, 200 + length % 50)
    return (*marker, *(rng.randint(low, high) for _ in range(length - len(marker))))


def long_context_batches(lengths: list[int], short: tuple[int, ...], nonce: str):
    """Each long prompt alone, then all of them and the short one in one batch, then again in
    reverse order: (batches of prompts)."""
    prompts = [long_context_prompt(nonce, n) for n in lengths]
    together = [*prompts, short]
    return [*([p] for p in prompts), together, together[::-1]]


def mixed_batches(trials: int) -> list[tuple[Prompt, ...]]:
    """`trials` batches, in turn: one prompt alone, the probe with one filler, with two.

    The probe moves from slot to slot, and each prompt is also sent alone, so that an output
    that changes whenever prompts of other lengths keep it company differs from one that had
    no company.
    """
    alone = (PROBE_PROMPT, *FILLERS)
    batches: list[tuple[Prompt, ...]] = []
    for i in range(trials):
        kind, turn = i % 3, i // 3
        if kind == 0:
            batches.append((alone[turn % len(alone)],))
            continue
        fillers: list[Prompt] = [FILLERS[(turn + k) % len(FILLERS)] for k in range(kind)]
        slot = turn % (kind + 1)
        batches.append((*fillers[:slot], PROBE_PROMPT, *fillers[slot:]))
    return batches


def prefix_batches(trials: int, nonce: str = "") -> list[tuple[Prompt, ...]]:
    """`trials` batches of prompts cut from one text at 1 to 4,097 characters, in turn: one
    prompt alone, two that share a prefix, all four; each begins with the run's nonce.

    No server has seen the nonce before the run, so each prompt's first output is computed
    without any cache; later batches may find its prefixes cached, shared within the batch or
    not, as the server's batching and cache decide, and none of that may change the outputs.
    The prompts sent alone are the outputs without any sharing in the batch.
    """
    start = nonce_text(nonce)
    prompts: list[Prompt] = [start + LONG_TEXT[:n] for n in PREFIX_LENGTHS]
    batches: list[tuple[Prompt, ...]] = []
    for i in range(trials):
        kind, turn = i % 3, i // 3
        size = (1, 2, len(prompts))[kind]
        batches.append(tuple(prompts[(turn + k) % len(prompts)] for k in range(size)))
    return batches


def concurrent_prompts(trials: int) -> list[Prompt]:
    """`trials` separate requests: every other one the probe, the rest the fillers in turn."""
    return [PROBE_PROMPT if i % 2 == 0 else FILLERS[(i // 2) % len(FILLERS)] for i in range(trials)]


def sampling_batches(config: ValidatorConfig) -> list[int]:
    """Batch sizes of the Sampling suite's seeded probe: the Single schedule up to 9, then one
    larger batch (17, or the largest Single batch if that is smaller).

    The logits' batch variance is Single's to find at every boundary; here it is the sampler
    that must not see the batch (its sort, cumulative sum and noise run per row), so the small
    boundaries and one batch past 16 are enough.
    """
    bound = config.batch_size_bound
    sizes = batch_size_schedule(min(bound, SAMPLING_SMALL_BATCH_BOUND))
    if bound > SAMPLING_SMALL_BATCH_BOUND:
        sizes.append(min(bound, SAMPLING_LARGE_BATCH))
    return sizes


def unseeded_batches(config: ValidatorConfig) -> list[int]:
    """Batch sizes of the probe sent without a seed: alone, and in a batch past 8."""
    return sorted({1, min(config.batch_size_bound, SAMPLING_SMALL_BATCH_BOUND)})


def sampling_concurrent_requests(trials: int) -> list[tuple[Prompt, bool]]:
    """`trials` separate requests, (prompt, seeded): Concurrent's prompts, two with the seed,
    two without, in turn, so that seeded and unseeded requests share the server's batches."""
    return [(p, i % 4 < 2) for i, p in enumerate(concurrent_prompts(trials))]


def sampling_alone_requests(trials: int) -> list[tuple[Prompt, bool]]:
    """The concurrent requests' other prompts, each sent alone first (the probe was, in the
    batches of 1)."""
    return [r for r in dict.fromkeys(sampling_concurrent_requests(trials)) if r[0] != PROBE_PROMPT]


def nonce_text(nonce: str) -> str:
    return f"[{nonce}] " if nonce else ""


def cache_marker(nonce: str, trial: int) -> tuple[int, ...]:
    """Token ids that start trial `trial`'s prefill sequences: drawn from the run's nonce, with
    a first id of its own for each trial (up to 255 trials), so that no prefill of one trial
    finds another's, or an earlier run's, tokens in the cache."""
    rng = random.Random(f"detinfer-cache-marker:{nonce}")
    low, high = RADIX_TOKEN_RANGE
    firsts = list(range(low, high + 1))
    rng.shuffle(firsts)
    rest = random.Random(f"detinfer-cache-marker:{nonce}:{trial}")
    others = tuple(rest.randint(low, high) for _ in range(CACHE_MARKER_TOKENS - 1))
    return (firsts[trial % len(firsts)], *others)


def radix_prompt(sampling_seed: int, trial: int) -> tuple[int, ...]:
    """Random but seeded token ids, the same for every endpoint and every run."""
    rng = random.Random(sampling_seed * 1_000_003 + trial)
    low, high = RADIX_TOKEN_RANGE
    return tuple(rng.randint(low, high) for _ in range(RADIX_PROMPT_TOKENS))


@dataclass(frozen=True)
class SuitePlan:
    """What one suite costs on one endpoint."""

    name: str
    requests: int
    """Generation requests."""
    sequences: int
    """Sequences generated (a batch of 9 is 9)."""
    generated_tokens: int
    what: str


def _skipped(suite: Suite, why: str) -> SuitePlan:
    return SuitePlan(suite.value, 0, 0, 0, why)


def _without(suite: Suite, config: ValidatorConfig, lacking: str) -> SuitePlan:
    """The plan of a suite the protocol cannot run: it lacks `lacking`."""
    return _skipped(suite, f"skipped with the {config.protocol.value} protocol (no {lacking})")


def suite_plans(config: ValidatorConfig) -> list[SuitePlan]:
    """The fingerprint and each selected suite, in the order they run, for one endpoint."""
    trials, new = config.trials, config.max_new_tokens
    plans = [
        SuitePlan(
            FINGERPRINT,
            1,
            len(FINGERPRINT_PROMPTS),
            len(FINGERPRINT_PROMPTS) * FINGERPRINT_MAX_NEW_TOKENS,
            f"{len(FINGERPRINT_PROMPTS)} fixed prompts in one batch, greedy, "
            f"{FINGERPRINT_MAX_NEW_TOKENS} tokens",
        )
    ]
    for suite in Suite:
        if suite not in config.suites:
            continue
        if suite == Suite.SINGLE:
            sizes = single_batches(config)
            more = (
                ""
                if config.max_batch_size is not None
                else f"; then up to the server's max_running_requests where it reports one, "
                f"{LARGE_BATCH_NEW_TOKENS} tokens each past {FULL_TOKENS_BATCH}"
            )
            plans.append(
                SuitePlan(
                    suite.value,
                    len(sizes),
                    sum(sizes),
                    sum(s * batch_new_tokens(config, s) for s in sizes),
                    "batch sizes " + ", ".join(map(str, sizes)) + more,
                )
            )
        elif suite == Suite.MIXED:
            n = sum(len(b) for b in mixed_batches(trials))
            plans.append(
                SuitePlan(
                    suite.value,
                    trials,
                    n,
                    n * new,
                    f"{trials} batches: a prompt alone, the probe with 1 or 2 fillers",
                )
            )
        elif suite == Suite.PREFIX:
            n = sum(len(b) for b in prefix_batches(trials))
            plans.append(
                SuitePlan(
                    suite.value,
                    trials,
                    n,
                    n * new,
                    f"{trials} batches of 1, 2 or 4 prompts sharing prefixes, never seen before "
                    "the run",
                )
            )
        elif suite == Suite.RADIX_CACHE:
            if not config.protocol.traits.token_id_prompts:
                plans.append(_without(suite, config, "token-id prompts"))
            elif config.sends_cache_prompt is False:
                plans.append(_skipped(suite, "skipped with --cache-prompt off"))
            else:
                plans.append(
                    SuitePlan(
                        suite.value,
                        3 * trials,
                        3 * trials,
                        trials * (new + 2 * RADIX_NEW_TOKENS),
                        f"{trials} trials: generate, then prefill from scratch and from the cache",
                    )
                )
        elif suite == Suite.PREFILL_DECODE:
            if config.protocol != Protocol.SGLANG:
                plans.append(_without(suite, config, "prompt logprobs"))
            else:
                n = prefill_decode_trials(config)
                plans.append(
                    SuitePlan(
                        suite.value,
                        2 * n,
                        2 * n,
                        n * (new + 1),
                        f"{n} prompts: generate, then prefill prompt + output; decode logprobs "
                        "against prefill logprobs",
                    )
                )
        elif suite == Suite.LONG_CONTEXT:
            if not config.protocol.traits.token_id_prompts:
                plans.append(_without(suite, config, "token-id prompts"))
            else:
                tokens = min(new, LONG_CONTEXT_NEW_TOKENS)
                lengths = long_context_lengths(PLAN_CONTEXT_LENGTH, tokens)
                n = len(lengths)
                plans.append(
                    SuitePlan(
                        suite.value,
                        n + 2,
                        3 * n + 2,
                        (3 * n + 2) * tokens,
                        f"prompts of {', '.join(map(str, lengths))} tokens (for a context of "
                        f"{PLAN_CONTEXT_LENGTH}: the server's own sets the longest), each alone, "
                        f"then all with a short one, twice; {tokens} tokens each",
                    )
                )
        elif suite == Suite.CONCURRENT:
            alone = len(set(concurrent_prompts(trials)))
            plans.append(
                SuitePlan(
                    suite.value,
                    alone + trials,
                    alone + trials,
                    (alone + trials) * new,
                    f"{alone} prompts one at a time, then {trials} requests at once",
                )
            )
        elif suite == Suite.SAMPLING and not config.protocol.traits.seed:
            plans.append(_without(suite, config, "seed"))
        elif suite == Suite.SAMPLING:
            sizes, unseeded = sampling_batches(config), unseeded_batches(config)
            judged = "" if config.protocol.traits.unseeded_repeat else " (reported, not judged)"
            alone = len(sampling_alone_requests(trials))
            n = sum(sizes) + sum(unseeded) + alone + trials
            route = config.protocol == Protocol.SGLANG
            plans.append(
                SuitePlan(
                    suite.value,
                    len(sizes) + len(unseeded) + alone + trials + 3 * route,
                    n + 4 * route,
                    (n + 4 * route) * new,
                    f"temperature {SAMPLING_TEMPERATURE}, top_p {SAMPLING_TOP_P}: seeded batches "
                    f"of {', '.join(map(str, sizes))}; without a seed "
                    f"{' and '.join(map(str, unseeded))}{judged}; {alone} alone, {trials} at once"
                    + ("; seeded through POST /v1/completions too (4)" if route else ""),
                )
            )
        elif suite == Suite.CROSS_REPLICA:
            plans.append(
                SuitePlan(suite.value, 0, 0, 0, "compares the outputs above between endpoints")
            )
    if not config.protocol.traits.list_batches:
        # One prompt per request: a batch of n is n requests at once.
        plans = [dataclasses.replace(p, requests=p.sequences) for p in plans]
    return plans
