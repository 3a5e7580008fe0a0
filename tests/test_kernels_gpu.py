"""The kernels at full size on a GPU: ~32K tokens, Llama-3.1-8B, 64-dim / 3-group and
256-dim (Gemma-2-9B's) head shapes, bf16 and fp8 (vLLM's fp8 KV cache), contiguous and
paged keys, against the PyTorch reference run on the GPU. Lengths are mostly not
multiples of the block, so last query and key blocks are partial. Run with
``pytest -m gpu``."""

from dataclasses import replace
from itertools import accumulate

import pytest
import torch
from helpers import plan_for, rel_error

from vllm_flexprefill import FlexPrefillConfig, Pattern
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.kernels import KVSource, flex_prefill_forward, index_to_masks
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.sparse_attention import (
    AttentionLaunch,
    block_sparse_attention,
)
from vllm_flexprefill.reference import block_sparse_attention as reference_attention
from vllm_flexprefill.reference import search as reference_search
from vllm_flexprefill.reference import vsgrid_search
from vllm_flexprefill.synthetic import (
    fp8_dequantised,
    fp8_quantised,
    paged_copy,
    planted_qkv,
)

pytestmark = pytest.mark.gpu
# max_density 1: the selection itself is compared (see the max_density tests below)
CONFIG = FlexPrefillConfig(
    gamma=0.9,
    tau=0.1,
    block_size=128,
    min_budget=1024,
    dense_threshold=0,
    max_density=1.0,
)


def check_request(q, k, v, mask, pattern, out, scale, config=CONFIG):
    """The kernel's selection matches the reference's (all but a few near-tied blocks),
    and its output matches reference attention over the kernel's own selection.
    ``pattern``: the kernel's per-head codes."""
    geo = ChunkGeometry(q.shape[0], k.shape[0], config.block_size)
    search = reference_search if config.selection == "paper" else vsgrid_search
    want_mask, want_pattern = search(q, k, geo, config, scale)
    assert pattern == want_pattern
    differing = (mask != want_mask).sum().item()
    assert (
        differing <= 1e-3 * geo.causal_block_mask(q.device).sum().item() * q.shape[1]
    ), differing
    assert not out.isnan().any()
    want_out, _ = reference_attention(q, k, v, mask, geo, scale)
    assert rel_error(out, want_out) < 1e-2


@pytest.mark.parametrize(
    "n, hq, hkv, d", [(32768, 32, 8, 128), (32763, 24, 8, 64), (30001, 16, 8, 256)]
)
def test_full_size_prompt_matches_reference(n, hq, hkv, d):
    q, k, v, planted = planted_qkv(
        n, hq, hkv, d, 128, seed=1, dtype=torch.bfloat16, device="cuda"
    )
    plan = plan_for([n], [n], 128, "cuda")
    out = torch.full_like(q, float("nan"))
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = flex_prefill_forward(q, KVSource(k, v), plan, CONFIG, d**-0.5, dense, out)
    mask = index_to_masks(plan, result.kv_index, result.kv_count)[0]
    pattern = result.pattern[0].tolist()
    assert [Pattern(c).label for c in pattern] == planted.kinds()
    check_request(q, k, v, mask, pattern, out, d**-0.5)


def spans(lens: list[int]) -> list[slice]:
    """Each length's rows in a batch that concatenates them."""
    ends = list(accumulate(lens))
    return [slice(end - n, end) for end, n in zip(ends, lens, strict=True)]


# A fresh ~16K prompt and an ~8K chunk after ~24K cached tokens (no length a multiple
# of the block: the chunk starts inside a block), Llama-3.1-8B's heads: lengths, then
# each request's rows of q and of k / v.
CHUNKED_Q_LENS, CHUNKED_KV_LENS = [16381, 8191], [16381, 32765]
CHUNKED_ROWS = list(zip(spans(CHUNKED_Q_LENS), spans(CHUNKED_KV_LENS), strict=True))
CHUNKED_HEAD_DIM = 128
CHUNKED_SCALE = CHUNKED_HEAD_DIM**-0.5


def prompt_and_chunk():
    """Planted bf16 ``q, k, v`` of the CHUNKED_ batch (contiguous keys) and its
    plan."""
    parts = [
        planted_qkv(
            n, 32, 8, CHUNKED_HEAD_DIM, 128, seed=n, dtype=torch.bfloat16, device="cuda"
        )
        for n in CHUNKED_KV_LENS
    ]
    q = torch.cat([parts[0][0], parts[1][0][-CHUNKED_Q_LENS[1] :]])
    k = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts])
    return q, k, v, plan_for(CHUNKED_Q_LENS, CHUNKED_KV_LENS, 128, "cuda")


def check_prompt_and_chunk(q, k, v, plan, result, out, config=CONFIG):
    """:func:`check_request` on each request of the CHUNKED_ batch."""
    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    for i, (rows, keys) in enumerate(CHUNKED_ROWS):
        check_request(
            q[rows], k[keys], v[keys], masks[i], result.pattern[i].tolist(),
            out[rows], CHUNKED_SCALE, config,
        )  # fmt: skip


@pytest.mark.parametrize(
    "selection, page_size", [("vsgrid", None), ("vsgrid", 16), ("rerank", 16)]
)
def test_a_vsgrid_prompt_and_chunk_match_reference(selection, page_size):
    """selection vsgrid or rerank: the CHUNKED_ prompt and chunk."""
    config = CONFIG.with_overrides({"selection": selection, "gamma": 0.96})
    q, k, v, plan = prompt_and_chunk()
    kv = (
        KVSource(k, v)
        if page_size is None
        else paged_copy(k, v, CHUNKED_KV_LENS, page_size)
    )
    dense = torch.zeros(2, dtype=torch.bool, device="cuda")
    out = torch.full_like(q, float("nan"))
    result = flex_prefill_forward(q, kv, plan, config, CHUNKED_SCALE, dense, out)
    check_prompt_and_chunk(q, k, v, plan, result, out, config)


@pytest.mark.parametrize("page_size", [16, 128])
def test_paged_chunks_with_context_match_reference(page_size):
    """The CHUNKED_ prompt and chunk, keys in a paged cache: the same outputs as
    from contiguous keys."""
    q, k, v, plan = prompt_and_chunk()
    dense = torch.zeros(2, dtype=torch.bool, device="cuda")
    outs = []
    for kv in (KVSource(k, v), paged_copy(k, v, CHUNKED_KV_LENS, page_size)):
        out = torch.full_like(q, float("nan"))
        result = flex_prefill_forward(q, kv, plan, CONFIG, CHUNKED_SCALE, dense, out)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    check_prompt_and_chunk(q, k, v, plan, result, outs[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_give_the_same_selection(dtype):
    n = 8192
    q, k, v, _ = planted_qkv(n, 8, 2, 128, 128, seed=2, dtype=dtype, device="cuda")
    plan = plan_for([n], [n], 128, "cuda")
    out = torch.full_like(q, float("nan"))
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = flex_prefill_forward(
        q, KVSource(k, v), plan, CONFIG, 128**-0.5, dense, out
    )
    mask = index_to_masks(plan, result.kv_index, result.kv_count)[0]
    check_request(q, k, v, mask, result.pattern[0].tolist(), out, 128**-0.5)


def test_the_presets_max_density_sends_a_dense_selection_dense():
    """At the presets' 0.6, a 2K prompt (whose search keeps about 0.76 of its blocks:
    the 1024-token minimum budgets) attends every causal block, every head DENSE, in
    the same batch as a 16K prompt (about 0.17) that keeps its sparse selection."""
    hq, hkv, d = 32, 8, 128
    config = CONFIG.with_overrides({"max_density": 0.6})
    q_lens = [16384, 2048]
    parts = [
        planted_qkv(n, hq, hkv, d, 128, seed=n, dtype=torch.bfloat16, device="cuda")
        for n in q_lens
    ]
    q, k, v = (torch.cat([p[i] for p in parts]) for i in range(3))
    plan = plan_for(q_lens, q_lens, 128, "cuda")
    out = torch.full_like(q, float("nan"))
    dense = torch.zeros(2, dtype=torch.bool, device="cuda")
    result = flex_prefill_forward(q, KVSource(k, v), plan, config, d**-0.5, dense, out)
    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    # the sparse prompt: as with max_density 1
    rows = slice(0, 16384)
    pattern = result.pattern[0].tolist()
    assert Pattern.DENSE not in pattern
    check_request(q[rows], k[rows], v[rows], masks[0], pattern, out[rows], d**-0.5)
    # the dense one: the reference's search keeps more than 0.6 of its blocks
    rows = slice(16384, 18432)
    geo = ChunkGeometry(2048, 2048, 128)
    causal = geo.causal_block_mask("cuda")
    want_mask, _ = reference_search(q[rows], k[rows], geo, CONFIG, d**-0.5)
    assert (want_mask & causal).sum().item() > config.max_selected(
        hq, geo.num_causal_pairs, 2048, hopper_kernel=True
    )
    assert result.pattern[1].tolist() == [Pattern.DENSE] * hq
    assert torch.equal(masks[1], causal.expand(hq, -1, -1))
    assert not out.isnan().any()
    want_out, _ = reference_attention(q[rows], k[rows], v[rows], masks[1], geo, d**-0.5)
    assert rel_error(out[rows], want_out) < 1e-2


# 0.05: both requests run dense, through the max_density check on the device
@pytest.mark.parametrize(
    "selection, max_density",
    [("paper", 1.0), ("paper", 0.05), ("vsgrid", 1.0), ("rerank", 1.0)],
)
def test_search_and_attention_never_synchronise_with_the_host(selection, max_density):
    """A step's whole sparse path as the backend runs it: the batch's tables (the plan
    and what the search memoises on it, e.g. vsgrid's segment probes), the search and
    the attention, with any synchronising CUDA call an error."""
    config = CONFIG.with_overrides({"max_density": max_density, "selection": selection})
    n = 16384
    q, k, v, _ = planted_qkv(
        n, 32, 8, 128, 128, seed=3, dtype=torch.bfloat16, device="cuda"
    )
    q2, k2, v2 = (torch.cat([t, t]) for t in (q, k, v))
    kv = KVSource(k2, v2)
    dense = torch.zeros(2, dtype=torch.bool, device="cuda")
    out = torch.full_like(q2, float("nan"))  # poisoned: every row must be written
    # compile outside the check
    find_blocks(q2, kv, plan_for([n, n], [n, n], 128, "cuda"), config, 128**-0.5, dense)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        plan = plan_for([n, n], [n, n], 128, "cuda")
        result = find_blocks(q2, kv, plan, config, 128**-0.5, dense)
        block_sparse_attention(
            q2, kv, plan, result.kv_index, result.kv_count, 128**-0.5, out
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert not out.isnan().any() and torch.equal(out[:n], out[n:])
    if max_density < 1:
        assert result.pattern.eq(Pattern.DENSE).all()
    else:
        assert not result.pattern.eq(Pattern.DENSE).any()


@pytest.mark.parametrize("d", [128, 64])
def test_an_fp8_prompt_matches_reference_on_dequantised_values(d):
    """A ~32K prompt stored as vLLM's fp8 cache stores it (e4m3 on 128-token pages,
    per-tensor scales) with fp8 queries, bf16 output: the reference runs on the
    dequantised values."""
    n, hq, hkv = 32761, 32, 8
    q, k, v, planted = planted_qkv(n, hq, hkv, d, 128, seed=4, device="cuda")
    (q8, q_scale), (k8, k_scale), (v8, v_scale) = map(fp8_quantised, (q, k, v))
    kv = paged_copy(k8, v8, [n], 128, 0, k_scale, v_scale)
    plan = plan_for([n], [n], 128, "cuda")
    out = torch.full(q.shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = flex_prefill_forward(
        q8, kv, plan, CONFIG, d**-0.5, dense, out, q_scale=q_scale
    )
    mask = index_to_masks(plan, result.kv_index, result.kv_count)[0]
    pattern = result.pattern[0].tolist()
    assert [Pattern(c).label for c in pattern] == planted.kinds()
    real = [fp8_dequantised(*pair) for pair in ((q8, q_scale), (k8, k_scale))]
    check_request(*real, fp8_dequantised(v8, v_scale), mask, pattern, out, d**-0.5)


def test_fp8_probabilities_at_full_size_stay_close_to_reference():
    """The ``fp8_probabilities`` launch on a 32K fp8 prompt: the probability-value
    product in fp8 (FA3's precision) stays within 3% of the reference on the
    dequantised values over the same selection."""
    n, hq, hkv, d = 32768, 32, 8, 128
    q, k, v, _ = planted_qkv(n, hq, hkv, d, 128, seed=5, device="cuda")
    (q8, q_scale), (k8, k_scale), (v8, v_scale) = map(fp8_quantised, (q, k, v))
    kv = paged_copy(k8, v8, [n], 128, 0, k_scale, v_scale)
    plan = plan_for([n], [n], 128, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = find_blocks(q8, kv, plan, CONFIG, d**-0.5, dense, q_scale)
    launch = replace(AttentionLaunch.default(d), fp8_probabilities=True)
    out = torch.full(q.shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    block_sparse_attention(
        q8, kv, plan, result.kv_index, result.kv_count, d**-0.5, out,
        launch=launch, q_scale=q_scale,
    )  # fmt: skip
    mask = index_to_masks(plan, result.kv_index, result.kv_count)[0]
    geo = ChunkGeometry(n, n, 128)
    real = [fp8_dequantised(*pair) for pair in ((q8, q_scale), (k8, k_scale))]
    want, _ = reference_attention(
        *real, fp8_dequantised(v8, v_scale), mask, geo, d**-0.5
    )
    assert not out.isnan().any()
    assert rel_error(out, want) < 3e-2
