"""The numerics: batch-invariant kernels give the same bits in any batch; batch-variant ones do not."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from detinfer.engine.config import (  # noqa: E402
    ATTENTION_BACKENDS,
    BATCH_INVARIANT_ATTENTION_BACKENDS,
    MODELS,
)
from detinfer.engine.kernels import (  # noqa: E402
    BatchInvariant,
    BatchVariant,
    attention_mask,
    kernels_for,
    query_chunks,
    tree_sum,
)
from detinfer.engine.model import KVCache, Step, Transformer  # noqa: E402
from detinfer.engine.sampling import SamplingParams, choose, gumbel_noise  # noqa: E402
from detinfer.validator.prompts import LONG_TEXT  # noqa: E402

# The invariance tests run on every device here: the CPU always, a GPU where there is one (the
# GPU tier: `python -m pytest tests/engine/test_kernels.py` on a machine with CUDA).
on_every_device = pytest.mark.parametrize(
    "device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
)


def _invariant(device: str, **kw) -> BatchInvariant:
    return BatchInvariant(block_rows=64 if device == "cuda" else 32, **kw)


# Every batch-invariant --attention-backend; `split_kv`, the test case, has tests of its own.
invariant_backends = pytest.mark.parametrize("backend", BATCH_INVARIANT_ATTENTION_BACKENDS)


def test_tree_sum_ignores_trailing_zero_padding_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 37, generator=g)
    for pad in (1, 27, 91, 500):
        padded = torch.cat([x, torch.zeros(7, pad)], dim=1)
        assert torch.equal(tree_sum(padded), tree_sum(x))
    assert torch.allclose(tree_sum(x), x.double().sum(-1).float(), rtol=1e-5)


@on_every_device
def test_invariant_linear_gives_every_row_the_same_bits_at_any_batch_size_and_position(device):
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(128, 352, generator=g), torch.randn(200, 128, generator=g)
    w, x, k = w.to(device), x.to(device), _invariant(device)
    alone = k.linear(x[5:6], w)
    for rows in (6, 7, 31, 32, 33, 64, 150):
        for start in (0, 3, 5):
            out = k.linear(x[start : start + rows], w)
            assert torch.equal(out[5 - start], alone[0]), (rows, start)


def test_variant_linear_changes_a_row_with_the_batch_size():
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(128, 352, generator=g), torch.randn(64, 128, generator=g)
    k = BatchVariant()
    alone = k.linear(x[:1], w)
    differing = [m for m in range(2, 64) if not torch.equal(k.linear(x[:m], w)[0], alone[0])]
    assert len(differing) > 30
    assert torch.allclose(k.linear(x[:7], w)[0], alone[0], atol=1e-4)  # only the last bits


def _attention_case(kernels, keys_pad: int, batch: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 1, 32, generator=g)
    k = torch.randn(1, 4, 50, 32, generator=g)
    v = torch.randn(1, 4, 50, 32, generator=g)
    # Our sequence at index 0, padded to `keys_pad` keys, in a batch with others.
    kp = torch.cat([k, torch.zeros(1, 4, keys_pad - 50, 32)], 2).repeat(batch, 1, 1, 1)
    vp = torch.cat([v, torch.zeros(1, 4, keys_pad - 50, 32)], 2).repeat(batch, 1, 1, 1)
    mask = attention_mask(
        torch.full((batch, 1), 49), torch.tensor([50] + [keys_pad] * (batch - 1)), keys_pad
    )
    q, kp, vp, mask = (t.to(device) for t in (q, kp, vp, mask))
    return kernels.attention(q.repeat(batch, 1, 1, 1), kp, vp, mask)[0]


@on_every_device
@invariant_backends
def test_invariant_attention_ignores_padding_and_batch(device, backend):
    k = _invariant(device, attention_backend=backend)
    reference = _attention_case(k, 50, 1, device)
    for pad, batch in ((64, 1), (300, 3), (1000, 16)):
        assert torch.equal(_attention_case(k, pad, batch, device), reference)


def test_variant_attention_depends_on_batch_and_keys():
    k = BatchVariant()
    reference = _attention_case(k, 50, 1)
    outs = [_attention_case(k, pad, batch) for pad, batch in ((64, 1), (300, 3), (1000, 16))]
    assert any(not torch.equal(o, reference) for o in outs)
    assert all(torch.allclose(o, reference, atol=1e-5) for o in outs)


@on_every_device
def test_cached_prefix_gives_the_same_logits_as_computing_it_in_deterministic_mode(device):
    config = MODELS["tiny"]
    model = Transformer(config, 5, _invariant(device), device=device)
    tokens = list(range(40, 140))
    fresh = KVCache.empty(config, 128, torch.float32, device)
    whole = model.forward([Step(tokens, fresh, logits_from=0)])[0]
    cached = KVCache.empty(config, 128, torch.float32, device)
    model.forward([Step(tokens[:70], cached)])
    rest = model.forward([Step(tokens[70:], cached, logits_from=0)])[0]
    assert torch.equal(rest, whole[70:])


def test_seeded_noise_is_a_function_of_seed_position_and_token():
    a = gumbel_noise(7, 12, 260, "cpu")
    assert torch.equal(a, gumbel_noise(7, 12, 260, "cpu"))
    assert not torch.equal(a, gumbel_noise(8, 12, 260, "cpu"))
    assert not torch.equal(a, gumbel_noise(7, 13, 260, "cpu"))
    logits = torch.zeros(260)
    params = SamplingParams(temperature=0.8)
    picks = {choose(logits, params, p, 7, {}) for p in range(50)}
    assert len(picks) > 10  # flat logits: the noise decides, and it varies by position
    assert choose(logits + torch.arange(260) * 1e3, params, 0, 7, {}) == 259


@on_every_device
def test_decode_steps_give_the_bits_of_a_prefill_in_any_batch_in_deterministic_mode(device):
    """A decode step's one query runs in a small tile, a prefill's in full tiles; both must give
    the same bits, and so must a batch that mixes short and long sequences (which attend in
    separate padded groups)."""
    config = MODELS["tiny"]
    model = Transformer(config, 5, _invariant(device), device=device)
    tokens = list(range(40, 140))
    whole = model.forward([Step(tokens, KVCache.empty(config, 128, torch.float32, device), 0)])[0]
    ours = KVCache.empty(config, 128, torch.float32, device)
    model.forward([Step(tokens[:90], ours)])
    lengths = (3, 300, 600, *[90] * 30)
    others = [KVCache.empty(config, 700, torch.float32, device) for _ in lengths]
    model.forward([Step([7] * n, cache) for n, cache in zip(lengths, others, strict=True)])
    # Alone, with 3 others of other lengths, with 3 + 30 (most of them as long as ours).
    for position, size in zip(range(90, 100), (0, 3, 33) * 4, strict=False):
        batch = [Step([tokens[position]], ours)] + [Step([9], c) for c in others[:size]]
        assert torch.equal(model.forward(batch)[0][0], whole[position]), (position, size)


@on_every_device
@invariant_backends
def test_attention_in_memory_bounded_chunks_gives_the_same_bits(device, backend):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 4, 200, 32, generator=g).to(device) for _ in range(3))
    mask = attention_mask(torch.arange(200).repeat(2, 1), torch.tensor([200, 150]), 200)
    mask = mask.to(device)
    whole = _invariant(device, attention_backend=backend).attention(q, k, v, mask)
    # tiled counts a query's elements per key tile, tree per key and head dimension: both
    # here in chunks of a few queries.
    small = 4096 if backend == "tiled" else 1 << 18
    chunked = _invariant(device, max_elements=small, attention_backend=backend).attention(
        q, k, v, mask
    )
    assert torch.equal(chunked, whole)
    assert len(list(query_chunks(mask, 2 * 4 * 200, max_elements=4096 * 8))) > 1


@pytest.fixture
def two_threads():
    """torch's CPU kernels split a tensor's elements over threads at a point that depends on its
    size; with one thread (the tests' default, tests/engines.py) that split never happens."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_exp_and_division_give_the_same_bits_in_a_vectorized_loop_remainder():
    """The deterministic kernels rest on this (silu, the softmaxes): an element that falls in the
    scalar remainder of torch's vectorized loop (the last few elements of a size that is not a
    multiple of the vector width, or of a thread's share) gets the bits of the vector body."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(70_000, generator=g) * 4
    whole_exp, whole_quotient = torch.exp(x), x / (1 + x.abs())
    for start in range(0, 64_000, 997):
        part = x[start : start + 63]  # two vector bodies of 16 and 31 in the remainder
        assert torch.equal(torch.exp(part), whole_exp[start : start + 63]), start
        assert torch.equal(part / (1 + part.abs()), whole_quotient[start : start + 63]), start


@on_every_device
def test_invariant_silu_gives_an_element_the_same_bits_at_any_size(device, two_threads):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(3071, 352, generator=g) * 4).to(device)
    k = _invariant(device)
    whole = k.silu(x)
    # Sizes whose remainders and thread splits fall elsewhere (3071 rows split over two threads
    # at row 1535.5), and one element alone.
    for rows in (1, 2, 5, 1024, 1536, 2048):
        assert torch.equal(k.silu(x[:rows]), whole[:rows]), rows
    assert torch.equal(k.silu(x[1535, 170:180].clone()), whole[1535, 170:180])
    assert torch.allclose(whole, torch.nn.functional.silu(x), rtol=1e-6, atol=1e-7)


def _prefix_prompts_logprobs(model, lengths: list[int], steps: int) -> list[list[torch.Tensor]]:
    """Each prompt's logprobs of its next token over a prefill and `steps` greedy decode steps
    of the batch (SGLang's prefix mode: prompts cut from one long text at these lengths)."""
    config = model.config
    caches = [KVCache.empty(config, n + steps, torch.float32, "cpu") for n in lengths]
    prompts = [list(LONG_TEXT[:n].encode()) for n in lengths]
    logits = model.forward([Step(p, c) for p, c in zip(prompts, caches, strict=True)])
    out: list[list[torch.Tensor]] = [[] for _ in lengths]
    for _ in range(steps + 1):
        rows = model.kernels.log_softmax(torch.cat([lg[-1:] for lg in logits]))
        for seq, row in zip(out, rows, strict=True):
            seq.append(row)
        tokens = [int(lg[-1].argmax()) for lg in logits]
        logits = model.forward([Step([t], c) for t, c in zip(tokens, caches, strict=True)])
    return out


def test_the_2048_character_prompt_alone_and_in_sglangs_prefix_batch_give_the_same_bits(
    two_threads,
):
    """issue 14: SGLang's prefix mode saw two outputs for this prompt, alone and in the batch
    [2048, 511, 1, 511], on two threads. The cause was torch's silu (the MLP's rows of the whole
    batch in one tensor, split over threads at its middle): one element of the prompt's hidden
    state had other bits in the batch. Also the reverse order (the prompt's rows elsewhere)."""
    model = Transformer(MODELS["tiny"], 0, _invariant("cpu"))
    alone = _prefix_prompts_logprobs(model, [2048], 3)[0]
    for batch, index in (([2048, 511, 1, 511], 0), ([511, 1, 511, 2048], 3)):
        together = _prefix_prompts_logprobs(model, batch, 3)[index]
        for step, (a, b) in enumerate(zip(alone, together, strict=True)):
            assert torch.equal(a, b), (batch, step, (a - b).abs().max().item())


# -- --attention-backend ---------------------------------------------------------------------


@on_every_device
def test_split_kv_the_test_case_attention_depends_on_batch_and_keys(device):
    """`split_kv` is not batch-invariant although every other kernel is: a validator must
    reject it. Alone (4 (sequence, head) pairs, 50 keys: 1 chunk; padded to 64 keys: 2 chunks)
    against batches of 3 and 16 (12 and 64 pairs)."""
    k = _invariant(device, attention_backend="split_kv")
    reference = _attention_case(k, 50, 1, device)
    outs = {
        (pad, b): _attention_case(k, pad, b, device) for pad, b in ((64, 1), (300, 3), (1000, 16))
    }
    assert not torch.equal(outs[64, 1], reference)
    assert not torch.equal(outs[300, 3], reference)
    assert all(torch.allclose(o, reference, atol=1e-5) for o in outs.values())


def _ours_alone_and_in_a_batch(backend: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One 70-token prompt's logits over its prefill and two decode steps, alone and in a
    batch with 8 others of its length and 2 of other lengths (other attention groups)."""
    config = MODELS["tiny"]
    model = Transformer(config, 5, BatchInvariant(attention_backend=backend))
    ours = list(range(40, 110))
    others = [[(7 * i + j) % 256 for j in range(n)] for i, n in enumerate([70] * 8 + [3, 130])]
    runs = []
    for batch in ([ours], [ours, *others]):
        caches = [KVCache.empty(config, len(p) + 2, torch.float32, "cpu") for p in batch]
        steps = [Step(p, c, logits_from=0) for p, c in zip(batch, caches, strict=True)]
        logits = [model.forward(steps)[0]]
        for token in (9, 10):
            logits.append(model.forward([Step([token], c) for c in caches])[0])
        runs.append(logits)
    return runs[0], runs[1]


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_each_attention_backend_in_a_model_batch_invariant_or_the_test_case(backend):
    alone, batched = _ours_alone_and_in_a_batch(backend)
    same = [torch.equal(a, b) for a, b in zip(alone, batched, strict=True)]
    if backend in BATCH_INVARIANT_ATTENTION_BACKENDS:
        assert all(same), (backend, same)
    else:
        # split_kv: alone 2 key chunks (4 pairs, 70-72 keys), in the batch 1 (36 pairs).
        assert not any(same), (backend, same)
    for a, b in zip(alone, batched, strict=True):
        assert torch.allclose(a, b, atol=1e-4)  # only the last bits


def test_the_invariant_backends_give_other_bits_than_each_other_in_the_last_places():
    """tiled and tree add in other orders (BLAS tiles vs elementwise trees): each is the same
    in any batch, but not the same as the other. Comparing outputs across backends is not a
    determinism check."""
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(3, 4, 90, 32, generator=g) for _ in range(3))
    mask = attention_mask(torch.arange(90).repeat(3, 1), torch.tensor([90, 60, 7]), 90)
    outs = {
        b: BatchInvariant(attention_backend=b).attention(q, k, v, mask) for b in ATTENTION_BACKENDS
    }
    assert not torch.equal(outs["tiled"], outs["tree"])
    for name, out in outs.items():
        assert torch.allclose(out, outs["tiled"], atol=1e-5), name


def test_default_mode_has_one_batch_variant_attention_whatever_the_backend():
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 4, 70, 32, generator=g) for _ in range(3))
    mask = attention_mask(torch.arange(70).repeat(2, 1), torch.tensor([70, 40]), 70)
    kernels = {b: kernels_for(False, "cpu", b) for b in ATTENTION_BACKENDS}
    assert all(isinstance(kern, BatchVariant) for kern in kernels.values())
    outs = [kern.attention(q, k, v, mask) for kern in kernels.values()]
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert kernels_for(True, "cpu", "tree").attention_backend == "tree"


def test_an_unknown_attention_backend_is_refused():
    with pytest.raises(ValueError, match="'flash': one of tiled, tree, split_kv"):
        BatchInvariant(attention_backend="flash")
