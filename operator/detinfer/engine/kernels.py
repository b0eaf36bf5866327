"""The engine's reductions, in two flavours: batch-variant (how GPU kernels behave) and batch-invariant.

Every reduction in the model goes through one of these classes: the matmuls of the linear layers,
RMSNorm, attention (the softmax and both products) and the log-softmax of the logprobs.

BatchVariant splits each reduction the way a GPU kernel picks its split from the problem shape:
split-K for matmuls with few rows (to fill the machine), split-KV for attention depending on how
many sequences and keys there are. The partial results are added in a different order for a
different split, so a sequence's logits change in their last bits when its batch changes. On CUDA
it uses torch's own kernels, which already behave so (cuBLAS and SDPA pick kernels by shape).

BatchInvariant gives each reduction one fixed order, whatever the batch:
- matmuls run in row blocks of one fixed shape (rows padded with zeros), so the BLAS sees the
  same problem for every row of every batch; tests check the bits;
- attention, by `--attention-backend` (config.ATTENTION_BACKENDS): `tiled` (the default) runs
  its products in tiles of a fixed number of keys (and 32 queries, or fewer where the BLAS is
  checked to give the same bits), the sums over keys as trees over those tiles; `tree` computes
  both products elementwise and sums them as pairwise trees over the whole row (no BLAS: slower,
  other bits than `tiled`, as invariant); `split_kv` is a TEST CASE that is not batch-invariant:
  BatchVariant's split-KV attention (key chunks by the batch's shape) inside otherwise
  batch-invariant kernels, for proving that a validator, or a search over backends, rejects it;
- all other sums are pairwise trees of elementwise additions (`tree_sum`), which IEEE arithmetic
  makes exact functions of their inputs. Zeros padded after the last element fold away without
  changing a bit, so the sum over a sequence's keys is the same whether the batch pads it to 40
  keys or 4000, and whether its prefix came from the cache or was just computed;
- elementwise functions use only operations whose bits do not depend on where an element falls
  in torch's vectorized loops (`silu`).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from detinfer.engine.config import ATTENTION_BACKENDS, DEFAULT_ATTENTION_BACKEND

NEG_INF = float("-inf")


def tree_sum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sum over `dim` as a pairwise tree: pad to a power of two, add the halves, repeat."""
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    width = 1 << max(0, (n - 1).bit_length())
    if width != n:
        x = F.pad(x, (0, width - n))
    while width > 1:
        width //= 2
        x = x[..., :width] + x[..., width:]
    return x[..., 0]


def attention_mask(q_pos: torch.Tensor, kv_len: torch.Tensor, keys: int) -> torch.Tensor:
    """[B, Tq, Tk] True where query (absolute position q_pos) may see the key."""
    k_pos = torch.arange(keys, device=q_pos.device)
    return (k_pos[None, None, :] <= q_pos[:, :, None]) & (
        k_pos[None, None, :] < kv_len[:, None, None]
    )


def query_chunks(mask: torch.Tensor, per_query: int, tile: int = 1, max_elements: int = 1 << 23):
    """Split the queries of `mask` [B, Tq, Tk] into chunks of whole tiles that hold at most
    about `max_elements` elements (`per_query` elements per query); yields (first query, end,
    keys the chunk's queries can see: 1 + the last visible key, at least 1)."""
    tq = mask.shape[1]
    step = tile * max(1, max_elements // max(1, per_query * tile))
    for lo in range(0, tq, step):
        hi = min(tq, lo + step)
        seen = mask[:, lo:hi].any(dim=1).any(dim=0).nonzero()
        yield lo, hi, int(seen[-1]) + 1 if len(seen) else 1


# A GPU kernel splits a reduction when there are too few rows to keep its cores busy; this
# stands for that: 64 "cores", reduction chunks of at least 32 elements.
CORES = 64
MIN_CHUNK = 32


def splits_for(rows: int, length: int) -> int:
    """How many partial sums a batch-variant reduction of `length` elements over `rows` rows uses."""
    return max(1, min(length // MIN_CHUNK, CORES // max(rows, 1)))


def split_kv_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, max_elements: int
) -> torch.Tensor:
    """Split-KV ("flash decoding") attention: the keys in as many chunks as `splits_for` gives
    for the (sequence, head) pairs and keys of this batch, merged by online softmax in order. A
    sequence's result depends on its batch (how many pairs, how many keys the padding gives)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    b, h = q.shape[:2]
    splits = splits_for(b * h, k.shape[2])
    outs = []
    for lo, hi, keys in query_chunks(mask, b * h * k.shape[2], max_elements=max_elements):
        bounds = [keys * i // splits for i in range(splits + 1)]
        out = m = denom = None
        for a, c in itertools.pairwise(bounds):
            if a == c:
                continue
            scores = (q[:, :, lo:hi] @ k[:, :, a:c].transpose(-1, -2)) * scale
            scores = scores.masked_fill(~mask[:, None, lo:hi, a:c], NEG_INF)
            m_c = scores.amax(-1)
            m_c = torch.where(torch.isinf(m_c), torch.zeros_like(m_c), m_c)
            p = torch.exp(scores - m_c[..., None])
            l_c = p.sum(-1)
            o_c = p @ v[:, :, a:c]
            if out is None:
                out, m, denom = o_c, m_c, l_c
                continue
            assert m is not None and denom is not None  # set with out, above
            new_m = torch.maximum(m, m_c)
            f_old, f_new = torch.exp(m - new_m), torch.exp(m_c - new_m)
            out = out * f_old[..., None] + o_c * f_new[..., None]
            denom = denom * f_old + l_c * f_new
            m = new_m
        # Every query sees at least one key (its own), so some key chunk ran above.
        assert out is not None and denom is not None
        outs.append(out / denom.clamp_min(torch.finfo(denom.dtype).tiny)[..., None])
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


class Kernels:
    """The interface the model uses; `name` says which flavour this is."""

    name: str

    def __init__(self, max_elements: int = 1 << 23):
        # Attention computes its scores for at most about this many elements at a time.
        self.max_elements = max_elements

    def linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [M, K] @ w [K, N]."""
        raise NotImplementedError

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """q [B, H, Tq, D], k/v [B, H, Tk, D], mask [B, Tq, Tk] -> [B, H, Tq, D]."""
        raise NotImplementedError

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Over the last dimension, in float32."""
        raise NotImplementedError

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """x * sigmoid(x), elementwise."""
        raise NotImplementedError


class BatchVariant(Kernels):
    name = "batch-variant"

    def _splits(self, rows: int, length: int) -> int:
        return splits_for(rows, length)

    def _split_sum(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Sum over the last dim in `splits` partial sums added in order."""
        parts = torch.tensor_split(x, self._splits(rows, x.shape[-1]), dim=-1)
        total = parts[0].sum(-1)
        for part in parts[1:]:
            total = total + part.sum(-1)
        return total

    def linear(self, x, w):
        if x.is_cuda:
            return x @ w
        k = x.shape[1]
        splits = self._splits(x.shape[0], k)
        if splits == 1:
            return x @ w
        bounds = [k * i // splits for i in range(splits + 1)]
        out = None
        for a, b in itertools.pairwise(bounds):
            part = x[:, a:b] @ w[a:b]
            out = part if out is None else out + part
        return out

    def rms_norm(self, x, weight, eps):
        if x.is_cuda:
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
        mean_square = self._split_sum(x * x, x.shape[0]) / x.shape[-1]
        return x * torch.rsqrt(mean_square + eps)[:, None] * weight

    def attention(self, q, k, v, mask):
        scale = 1.0 / math.sqrt(q.shape[-1])
        b, h = q.shape[:2]
        chunks = query_chunks(mask, b * h * k.shape[2], max_elements=self.max_elements)
        if q.is_cuda:
            outs = [
                F.scaled_dot_product_attention(
                    q[:, :, lo:hi],
                    k[:, :, :keys],
                    v[:, :, :keys],
                    attn_mask=mask[:, None, lo:hi, :keys],
                    scale=scale,
                )
                for lo, hi, keys in chunks
            ]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        # Split-KV ("flash decoding"): the number of key chunks depends on how many (sequence,
        # head) pairs there are to spread over the cores and on the number of keys.
        return split_kv_attention(q, k, v, mask, self.max_elements)

    def log_softmax(self, logits):
        logits = logits.float()
        if logits.is_cuda:
            return torch.log_softmax(logits, -1)
        m = logits.amax(-1, keepdim=True)
        lse = torch.log(self._split_sum(torch.exp(logits - m), logits.shape[0]))
        return logits - m - lse[:, None]

    def silu(self, x):
        return F.silu(x)


class BatchInvariant(Kernels):
    """Batch-invariant reductions; attention by `attention_backend` (config.ATTENTION_BACKENDS),
    of which `split_kv` is the test case that is not batch-invariant."""

    name = "batch-invariant"

    def __init__(
        self,
        block_rows: int = 32,
        max_elements: int = 1 << 23,
        attention_backend: str = DEFAULT_ATTENTION_BACKEND,
    ):
        super().__init__(max_elements)
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend {attention_backend!r}: one of {', '.join(ATTENTION_BACKENDS)}"
            )
        self.block_rows = block_rows
        self.attention_backend = attention_backend
        self._tiles_agree: dict[int, bool] = {}  # by head size

    def linear(self, x, w):
        m, k = x.shape
        r = self.block_rows
        pad = (-m) % r
        if pad:
            x = torch.cat([x, x.new_zeros(pad, k)])
        blocks = [x[i : i + r].contiguous() @ w for i in range(0, m + pad, r)]
        return torch.cat(blocks)[:m] if len(blocks) > 1 or pad else blocks[0]

    def rms_norm(self, x, weight, eps):
        mean_square = tree_sum(x.float() * x.float()) / x.shape[-1]
        return (x.float() * torch.rsqrt(mean_square + eps)[:, None]).to(x.dtype) * weight

    QUERY_TILE = 32
    KEY_TILE = 64
    SMALL_QUERY_TILES = (4, 8, 16)
    """On a CPU, fewer queries (a decode step has one per sequence) run in the smallest of these
    tiles that holds them, where the BLAS gives every row of such a tile the same bits as of a
    full QUERY_TILE (checked once per head size, `_small_tiles_agree`); otherwise in a full tile.
    Without them a decode step would pad each query to 32 rows, 32 times the work."""

    def _query_tile(self, tq: int, d: int, device: torch.device) -> int:
        # Not on a GPU: cuBLAS picks its kernel by the whole problem, the batch count included,
        # so a check at one batch count proves nothing for another. Measured on an H100: with
        # small decode tiles a decode step gave other bits in a batch of 31 than alone.
        if tq >= self.QUERY_TILE or device.type != "cpu":
            return self.QUERY_TILE
        if d not in self._tiles_agree:
            self._tiles_agree[d] = self._small_tiles_agree(d)
        if not self._tiles_agree[d]:
            return self.QUERY_TILE
        return next(t for t in (*self.SMALL_QUERY_TILES, self.QUERY_TILE) if t >= tq)

    def _small_tiles_agree(self, d: int) -> bool:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(3, 1, self.QUERY_TILE, d, generator=g)
        k = torch.randn(3, 2, d, self.KEY_TILE, generator=g)
        full = torch.matmul(q[:, :, None], k[:, None])
        return all(
            torch.equal(torch.matmul(q[:, :, None, :t], k[:, None]), full[..., :t, :])
            for t in self.SMALL_QUERY_TILES
        )

    def attention(self, q, k, v, mask):
        if self.attention_backend == "tree":
            return self._tree_attention(q, k, v, mask)
        if self.attention_backend == "split_kv":  # the test case: NOT batch-invariant
            dtype = q.dtype
            out = split_kv_attention(q.float(), k.float(), v.float(), mask, self.max_elements)
            return out.to(dtype)
        return self._tiled_attention(q, k, v, mask)

    def _tree_attention(self, q, k, v, mask):
        """`tree`: no BLAS. The scores as elementwise products summed over the head dimension in
        a pairwise tree, the output as elementwise products summed over the keys in a pairwise
        tree over the whole row. Masked and padded keys contribute exact zeros, which the tree
        folds away, so a sequence's bits do not depend on how far its batch pads the keys (nor
        on anything else of the batch: every query row is computed on its own). Moves about
        head-dimension times the memory of `tiled`, hence slower; its bits differ from
        `tiled`'s (other orders of addition) in the last places."""
        b, h, _, d = q.shape
        scale = 1.0 / math.sqrt(d)
        dtype = q.dtype
        q, k, v = q.float(), k.float(), v.float()
        tiny = torch.finfo(torch.float32).tiny
        outs = []
        for lo, hi, keys in query_chunks(
            mask, b * h * k.shape[2] * d, max_elements=self.max_elements
        ):
            kc, vc = k[:, :, None, :keys], v[:, :, None, :keys]  # [B, H, 1, keys, D]
            scores = tree_sum(q[:, :, lo:hi, None, :] * kc) * scale  # [B, H, n, keys]
            scores = scores.masked_fill(~mask[:, None, lo:hi, :keys], NEG_INF)
            m = scores.amax(-1, keepdim=True)  # a max is exact in any order
            m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
            p = torch.exp(scores - m)
            denom = tree_sum(p)  # [B, H, n]
            weighted = tree_sum(p[..., None] * vc, dim=3)  # [B, H, n, D]
            outs.append(weighted / denom.clamp_min(tiny)[..., None])
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return out.to(dtype)

    def _tiled_attention(self, q, k, v, mask):
        """`tiled`: products in tiles of one fixed shape (queries x KEY_TILE, through the BLAS or cuBLAS),
        sums over keys as pairwise trees over key tiles (elementwise trees for every product
        would move d times more memory: too slow for prompts of thousands of tokens, on a GPU
        too). A fully masked or padded key tile
        contributes exact zeros, which the trees fold away, so the key tiles past the last
        visible key are not computed at all (causal prefill does about half the work)."""
        b, h, tq, d = q.shape
        tk = k.shape[2]
        qt_, kt_ = self._query_tile(tq, d, q.device), self.KEY_TILE
        scale = 1.0 / math.sqrt(d)
        dtype = q.dtype
        pad_q, pad_k = (-tq) % qt_, (-tk) % kt_
        q = F.pad(q.float(), (0, 0, 0, pad_q))
        k = F.pad(k.float(), (0, 0, 0, pad_k))
        v = F.pad(v.float(), (0, 0, 0, pad_k))
        mask = F.pad(mask, (0, pad_k, 0, pad_q), value=False)
        nq, nk = (tq + pad_q) // qt_, (tk + pad_k) // kt_
        q_tiles = q.reshape(b * h, nq, qt_, d)
        k_tiles = k.reshape(b * h, nk, kt_, d).transpose(-1, -2)
        v_tiles = v.reshape(b * h, nk, kt_, d)
        outs = []
        for lo, hi, keys in query_chunks(
            mask, b * h * nk * max(kt_, d), tile=qt_, max_elements=self.max_elements
        ):
            n, nkc = (hi - lo) // qt_, -(-keys // kt_)
            qc = q_tiles[:, lo // qt_ : hi // qt_]
            scores = torch.matmul(qc[:, :, None], k_tiles[:, None, :nkc]) * scale
            visible = (
                mask[:, None, lo:hi, : nkc * kt_]
                .expand(b, h, -1, -1)
                .reshape(b * h, n, qt_, nkc, kt_)
                .permute(0, 1, 3, 2, 4)
            )  # like scores: [BH, n, nkc, QT, KT]
            scores = scores.masked_fill(~visible, NEG_INF)
            m = scores.amax(dim=(2, 4), keepdim=True)  # a max is exact in any order
            m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
            p = torch.exp(scores - m)
            denom = tree_sum(tree_sum(p), dim=2)  # over keys in a tile, then over tiles
            partial = torch.matmul(p, v_tiles[:, None, :nkc])  # [BH, n, nkc, QT, D]
            weighted = tree_sum(partial, dim=2)
            outs.append(weighted / denom.clamp_min(torch.finfo(denom.dtype).tiny)[..., None])
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return out.reshape(b, h, nq * qt_, d)[:, :, :tq].to(dtype)

    def log_softmax(self, logits):
        logits = logits.float()
        m = logits.amax(-1, keepdim=True)
        lse = torch.log(tree_sum(torch.exp(logits - m)))
        return logits - m - lse[:, None]

    def silu(self, x):
        """On the CPU as x / (1 + exp(-x)): torch's CPU silu (and sigmoid) gives an element other
        bits in the scalar remainder of its vectorized loop than in the vector body (4% of
        elements, measured here), and where remainders fall depends on the tensor's size and on
        how its elements are split over threads, that is on the whole batch (issue 14). exp and
        division give the same bits on both paths (tests/engine/test_kernels.py checks it). On
        a GPU every element runs the same code, so torch's own silu is invariant there."""
        if x.device.type != "cpu":
            return F.silu(x)
        xf = x.float()
        return (xf / (1 + torch.exp(-xf))).to(x.dtype)


class PlantedKernels(Kernels):
    """A planted fault's kernels (engine/faults.py, a test tool): the engine's kernels, with
    another order of addition in the matmuls while `active`: the inner dimension in two halves,
    each through the same kernel, then added. Everything else, and everything while inactive,
    is the inner kernels' own arithmetic."""

    def __init__(self, inner: Kernels, name: str | None = None) -> None:
        super().__init__(inner.max_elements)
        self.inner = inner
        self.name = name or inner.name
        self.active = False

    def linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.inner.linear(x, w)
        half = x.shape[1] // 2
        return self.inner.linear(x[:, :half].contiguous(), w[:half]) + self.inner.linear(
            x[:, half:].contiguous(), w[half:]
        )

    def rms_norm(self, x, weight, eps):
        return self.inner.rms_norm(x, weight, eps)

    def attention(self, q, k, v, mask):
        return self.inner.attention(q, k, v, mask)

    def log_softmax(self, logits):
        return self.inner.log_softmax(logits)

    def silu(self, x):
        return self.inner.silu(x)


def kernels_for(
    deterministic: bool, device: str, attention_backend: str = DEFAULT_ATTENTION_BACKEND
) -> Kernels:
    """The mode's kernels. `attention_backend` picks deterministic mode's attention; default
    mode has one attention (batch-variant) whatever the name."""
    # A GPU has the memory to compute attention for more queries at a time.
    gpu = device.startswith("cuda")
    max_elements = 1 << 26 if gpu else 1 << 23
    if deterministic:
        return BatchInvariant(
            block_rows=64 if gpu else 32,
            max_elements=max_elements,
            attention_backend=attention_backend,
        )
    return BatchVariant(max_elements=max_elements)
