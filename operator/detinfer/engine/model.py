"""A decoder-only transformer with random weights from a seed: RMSNorm, rotary attention with a KV
cache, gated MLP, LM head. All reductions go through `Kernels`, so one flag decides whether a
sequence's numbers depend on its batch."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from detinfer.engine.config import ModelConfig
from detinfer.engine.kernels import Kernels, attention_mask
from detinfer.engine.lora import LoraAdapter
from detinfer.engine.tokenizer import EOS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class KVCache:
    """One sequence's keys and values: per layer [H, capacity, D], the first `length` valid."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, capacity: int, dtype, device) -> KVCache:
        shape = (config.heads, max(capacity, 16), config.head_dim)
        return cls(
            [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.layers)],
            [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.layers)],
        )

    def reserve(self, length: int) -> None:
        capacity = self.keys[0].shape[1]
        if length <= capacity:
            return
        grow = max(length, 2 * capacity)
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                bigger = t.new_zeros((t.shape[0], grow, t.shape[2]))
                bigger[:, : self.length] = t[:, : self.length]
                store[i] = bigger

    def prefix(self, length: int) -> KVCache:
        """A copy of the first `length` positions (for the prefix cache)."""
        return KVCache(
            [t[:, :length].clone() for t in self.keys],
            [t[:, :length].clone() for t in self.values],
            length,
        )


@dataclass
class Step:
    """One sequence's part of a forward pass: new tokens after `cache.length` cached ones."""

    tokens: list[int]
    cache: KVCache
    logits_from: int = -1
    """Return logits for the new tokens from this index on (default: only the last one)."""
    lora: LoraAdapter | None = None
    """The adapter the sequence runs with (None: the base model)."""


class Transformer:
    def __init__(
        self, config: ModelConfig, seed: int, kernels: Kernels, device="cpu", dtype="float32"
    ):
        self.config = config
        self.kernels = kernels
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        d, c = config.hidden, config

        def randn(*shape, scale):
            t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
            return t.to(device=self.device, dtype=self.dtype)

        self.embed = randn(c.vocab_size, d, scale=1.0)
        self.layers = []
        for _ in range(c.layers):
            self.layers.append(
                {
                    "attn_norm": torch.ones(d, device=self.device, dtype=self.dtype),
                    "wq": randn(d, d, scale=d**-0.5),
                    "wk": randn(d, d, scale=d**-0.5),
                    "wv": randn(d, d, scale=d**-0.5),
                    "wo": randn(d, d, scale=d**-0.5 / c.layers**0.5),
                    "mlp_norm": torch.ones(d, device=self.device, dtype=self.dtype),
                    "w_gate": randn(d, c.mlp, scale=d**-0.5),
                    "w_up": randn(d, c.mlp, scale=d**-0.5),
                    "w_down": randn(c.mlp, d, scale=c.mlp**-0.5 / c.layers**0.5),
                }
            )
        self.final_norm = torch.ones(d, device=self.device, dtype=self.dtype)
        # The LM head stays float32 (logits are float32 in real engines too).
        self.lm_head = self._lm_head(gen).to(self.device)
        half = c.head_dim // 2
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
        angles = torch.arange(c.context_length, dtype=torch.float64)[:, None] * inv_freq[None]
        self.cos = angles.cos().to(self.device, torch.float32)
        self.sin = angles.sin().to(self.device, torch.float32)

    def _lm_head(self, gen: torch.Generator) -> torch.Tensor:
        """[d, V]. A byte and its case partner (b ^ 0x20) get nearly the same row, as near-synonyms
        do in trained models: their logits differ by about `synonym_spread`, so some steps
        are near-ties that last-bit noise can flip."""
        c = self.config
        base = torch.randn(c.vocab_size, c.hidden, generator=gen) * c.hidden**-0.5
        jitter = torch.randn(c.vocab_size, c.hidden, generator=gen) * c.hidden**-0.5
        spread = c.synonym_spread * (0.5 + 0.5 * torch.rand(c.vocab_size, generator=gen))
        rows = base.clone()
        for b in range(256):
            partner = b ^ 0x20
            rows[b] = base[min(b, partner)] + spread[min(b, partner)] * jitter[b]
        rows[EOS] *= 0.5  # random weights would otherwise end sequences too soon to compare
        return rows.T.contiguous()

    # -- forward ---------------------------------------------------------------------------

    def forward(self, steps: list[Step]) -> list[torch.Tensor]:
        """Run the new tokens of every sequence as one batch; append their K/V to the caches.

        Returns per sequence float32 logits [n, V] for its positions from `logits_from` on.
        """
        kern, c = self.kernels, self.config
        counts = [len(s.tokens) for s in steps]
        starts = [s.cache.length for s in steps]
        tokens = torch.tensor([t for s in steps for t in s.tokens], device=self.device)
        positions = torch.tensor(
            [p for s0, n in zip(starts, counts, strict=True) for p in range(s0, s0 + n)],
            device=self.device,
        )
        x = self.embed[tokens]  # [N, d]: the batch's new tokens as rows
        kv_lens = [s0 + n for s0, n in zip(starts, counts, strict=True)]
        firsts = [0, *itertools.accumulate(counts)][:-1]  # each sequence's first row
        groups = [
            _AttentionGroup.build(members, counts, starts, firsts, self.device)
            for members in _group_by_length(counts, kv_lens)
        ]
        for g in groups:  # room for the new tokens, and as far as the group's keys are read
            for i in g.members:
                steps[i].cache.reserve(g.keys)
        adapted = _rows_by_adapter(steps, counts, firsts, self.device)
        cos, sin = self.cos[positions], self.sin[positions]
        h, hd = c.heads, c.head_dim

        for li, layer in enumerate(self.layers):
            y = kern.rms_norm(x, layer["attn_norm"], c.norm_eps)
            q = _rope(kern.linear(y, layer["wq"]).view(-1, h, hd), cos, sin)
            k = _rope(kern.linear(y, layer["wk"]).view(-1, h, hd), cos, sin)
            v = kern.linear(y, layer["wv"]).view(-1, h, hd)
            for s, s0, n, r in zip(steps, starts, counts, firsts, strict=True):
                s.cache.keys[li][:, s0 : s0 + n] = k[r : r + n].transpose(0, 1)
                s.cache.values[li][:, s0 : s0 + n] = v[r : r + n].transpose(0, 1)
            attn = torch.empty_like(q)
            for g in groups:
                # The group's sequences padded to [b, H, Tk, D] keys and [b, H, Tq, D] queries.
                # (Positions past a sequence's own length are masked: whatever finite values
                # its cache holds there get weight exactly 0.)
                kb = torch.stack([steps[i].cache.keys[li][:, : g.keys] for i in g.members])
                vb = torch.stack([steps[i].cache.values[li][:, : g.keys] for i in g.members])
                qb = torch.zeros(
                    (len(g.members), h, g.queries, hd), dtype=self.dtype, device=self.device
                )
                qb[g.row_seq, :, g.row_off] = q[g.rows]
                attn[g.rows] = kern.attention(qb, kb, vb, g.mask)[g.row_seq, :, g.row_off]
            attn = attn.reshape(-1, c.hidden)
            projected = kern.linear(attn, layer["wo"])
            for adapter, rows in adapted:
                projected[rows] += adapter.delta(kern, li, attn[rows])
            x = x + projected
            y = kern.rms_norm(x, layer["mlp_norm"], c.norm_eps)
            gated = kern.silu(kern.linear(y, layer["w_gate"])) * kern.linear(y, layer["w_up"])
            x = x + kern.linear(gated, layer["w_down"])

        for s, s0, n in zip(steps, starts, counts, strict=True):
            s.cache.length = s0 + n
        # Logits only for the rows asked for.
        wanted = []
        for s, n, r in zip(steps, counts, firsts, strict=True):
            first = n - 1 if s.logits_from < 0 else min(s.logits_from, n - 1)
            wanted.append((r + first, n - first))
        index = torch.tensor([r + j for r, m in wanted for j in range(m)], device=self.device)
        hidden = kern.rms_norm(x[index], self.final_norm, c.norm_eps).float()
        logits = kern.linear(hidden, self.lm_head)
        out, row = [], 0
        for _, m in wanted:
            out.append(logits[row : row + m])
            row += m
        return out


def _rows_by_adapter(
    steps: list[Step], counts: list[int], firsts: list[int], device
) -> list[tuple[LoraAdapter, torch.Tensor]]:
    """Each adapter in the batch and the rows of the sequences that run with it."""
    rows: dict[str, tuple[LoraAdapter, list[int]]] = {}
    for s, n, r in zip(steps, counts, firsts, strict=True):
        if s.lora is not None:
            rows.setdefault(s.lora.id, (s.lora, []))[1].extend(range(r, r + n))
    return [(a, torch.tensor(ids, device=device)) for a, ids in rows.values()]


def _group_by_length(counts: list[int], kv_lens: list[int]) -> list[list[int]]:
    """Sequences whose new-token and key counts round up to the same powers of two attend as one
    padded batch; sequences of very different lengths do not pad each other (a batch of one
    4097-token prompt and nine short ones would otherwise cost ten long ones)."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, (n, keys) in enumerate(zip(counts, kv_lens, strict=True)):
        buckets.setdefault(((n - 1).bit_length(), (keys - 1).bit_length()), []).append(i)
    return list(buckets.values())


@dataclass
class _AttentionGroup:
    members: list[int]
    queries: int
    keys: int
    rows: torch.Tensor
    """The group's rows in the batch's [N, ...] layout."""
    row_seq: torch.Tensor
    row_off: torch.Tensor
    """Where each of those rows sits in the group's padded [b, Tq] layout."""
    mask: torch.Tensor

    @classmethod
    def build(cls, members, counts, starts, firsts, device) -> _AttentionGroup:
        queries = max(counts[i] for i in members)
        keys = max(starts[i] + counts[i] for i in members)
        rows = [firsts[i] + j for i in members for j in range(counts[i])]
        row_seq = [m for m, i in enumerate(members) for _ in range(counts[i])]
        row_off = [j for i in members for j in range(counts[i])]
        q_pos = torch.full((len(members), queries), -1, dtype=torch.long, device=device)
        q_pos[row_seq, row_off] = torch.tensor(
            [starts[i] + j for i in members for j in range(counts[i])], device=device
        )
        kv_len = torch.tensor([starts[i] + counts[i] for i in members], device=device)
        return cls(
            members,
            queries,
            keys,
            torch.tensor(rows, device=device),
            torch.tensor(row_seq, device=device),
            torch.tensor(row_off, device=device),
            attention_mask(q_pos, kv_len, keys),
        )


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on [N, H, D] (elementwise: no reduction, same bits in any batch)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).to(x.dtype)
