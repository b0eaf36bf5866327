"""Choosing the next token: greedy, or sampling with Gumbel noise, seeded or not.

Sampling at temperature > 0 adds Gumbel noise and takes the argmax (the Gumbel-max trick draws
from the softmax). In deterministic mode the noise of token t at position p is a hash of
(seed, p, t), not the state of a random generator, so it is the same whatever else the engine
runs, in whatever order: seeded sampling repeats exactly when the logits do, as SGLang's
deterministic mode does with `sampling_seed` (`multinomial_with_seed` in
python/sglang/srt/layers/sampler.py). In default mode SGLang ignores `sampling_seed` and draws
from torch's generator, whose state every sample advances, so a sample depends on all that ran
before it; `choose` does the same when given a generator instead of a seed. Each sequence is
sampled on its own row, so no reduction here depends on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    max_new_tokens: int = 128
    sampling_seed: int | None = None
    top_p: float = 1.0
    top_k: int = -1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xorshift-multiply) on int64 tensors holding 32-bit values."""
    x = x & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    return (x >> 16) ^ x


def gumbel_noise(seed: int, position: int, vocab: int, device) -> torch.Tensor:
    """float32 Gumbel(0, 1) noise for every token at one position, a pure function of its key."""
    tokens = torch.arange(vocab, dtype=torch.int64, device=device)
    key = _mix32(torch.full_like(tokens, (seed ^ (seed >> 32)) & MASK32))
    key = _mix32(key ^ ((position * 0x9E3779B1) & MASK32))
    bits = _mix32(key ^ _mix32(tokens + 0x632BE5AB))
    u = (bits.double() + 0.5) / 2.0**32  # in (0, 1)
    return (-torch.log(-torch.log(u))).float()


def choose(
    logits: torch.Tensor,
    params: SamplingParams,
    position: int,
    seed: int | torch.Generator,
    counts: dict[int, int],
) -> int:
    """The next token from one sequence's float32 logits [V]; `seed` keys the noise by
    (seed, position, token), a generator draws it from the generator's state instead."""
    if params.frequency_penalty or params.presence_penalty:
        logits = logits.clone()
        for token, count in counts.items():
            logits[token] -= params.frequency_penalty * count + params.presence_penalty
    if params.temperature == 0.0 or params.top_k == 1:
        return int(torch.argmax(logits))
    scaled = logits / params.temperature
    if 0 < params.top_k < scaled.shape[0]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(ordered, -1)
        # Keep the tokens whose mass before them is at most top_p (the first always stays), as
        # SGLang's top_k_top_p_min_p_sampling_from_probs_torch does.
        drop = (torch.cumsum(probs, -1) - probs) > params.top_p
        scaled = scaled.clone()
        scaled[order[drop]] = float("-inf")
    if isinstance(seed, torch.Generator):
        noise = _generator_gumbel_noise(seed, scaled.shape[0], scaled.device)
    else:
        noise = gumbel_noise(seed, position, scaled.shape[0], scaled.device)
    return int(torch.argmax(scaled + noise))


def _generator_gumbel_noise(generator: torch.Generator, vocab: int, device) -> torch.Tensor:
    u = torch.rand(vocab, generator=generator, dtype=torch.float64).clamp_(min=2.0**-53)
    return (-torch.log(-torch.log(u))).float().to(device)
