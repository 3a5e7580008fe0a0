"""The prototype re-rank kernel against ``refine.sampled_masses`` (CPU: TRITON_INTERPRET=1;
GPU in bf16). Run: cd scripts && TRITON_INTERPRET=1 python -m pytest -q test_rerank_kernel.py"""
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "2026-12-05-run27" / "scripts")]
from refine import sampled_masses  # noqa: E402
from rerank_kernel import sampled_block_mass  # noqa: E402
from vllm_flexprefill.blocks import ChunkGeometry  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def candidates(geo, heads, per_row, generator):
    """Random causal candidate lists (the diagonal always), ``index [H, nq, C]`` int32
    padded with -1, ``count [H, nq]``, and the same as a mask ``[H, nq, nk]``."""
    nq, nk = geo.num_q_blocks, geo.num_k_blocks
    index = torch.full((heads, nq, per_row), -1, dtype=torch.int32)
    count = torch.zeros(heads, nq, dtype=torch.int32)
    mask = torch.zeros(heads, nq, nk, dtype=torch.bool)
    for h in range(heads):
        for r in range(nq):
            diagonal = geo.first_q_block + r
            others = torch.randperm(diagonal, generator=generator)[: per_row - 1]
            blocks = torch.cat([others, torch.tensor([diagonal])])
            index[h, r, : len(blocks)] = blocks.int()
            count[h, r] = len(blocks)
            mask[h, r, blocks] = True
    return index, count, mask


@pytest.mark.parametrize(
    "q_len, kv_len, heads, kv_heads, queries, dtype",
    [
        (1000, 1000, 4, 2, 16, torch.float32),  # partial last block, GQA
        (333, 1291, 2, 1, 8, torch.float32),  # cached context, unaligned chunk start
        (517, 517, 2, 2, 32, torch.float32),
    ]
    + ([(4099, 9000, 8, 2, 16, torch.bfloat16)] if DEVICE == "cuda" else []),
)
def test_matches_reference(q_len, kv_len, heads, kv_heads, queries, dtype):
    g = torch.Generator().manual_seed(q_len * 7 + kv_len)
    B, D = 128, 64
    geo = ChunkGeometry(q_len, kv_len, B)
    q = torch.randn(q_len, heads, D, generator=g)
    k = torch.randn(kv_len, kv_heads, D, generator=g) * 1.5
    index, count, mask = candidates(geo, heads, 5, g)
    scale = D**-0.5
    expected = sampled_masses(q.to(dtype).double(), k.to(dtype).double(), geo, scale, queries, mask, False)
    got = sampled_block_mass(
        q.to(DEVICE, dtype), k.to(DEVICE, dtype), index.to(DEVICE), count.to(DEVICE), B, scale, queries
    ).cpu()
    want = torch.where(index >= 0, expected.gather(-1, index.clamp(min=0).long()), float("nan"))
    assert torch.isnan(got[index < 0]).all()  # padding untouched
    filled = index >= 0
    err = (got[filled] - want[filled].float()).abs().max() / want[filled].abs().max()
    assert err < (2e-2 if dtype == torch.bfloat16 else 1e-5), err
    # each row's masses over its candidates sum to one
    assert torch.allclose(got.nan_to_num(0).sum(-1), torch.ones(heads, geo.num_q_blocks), atol=1e-4)


def test_takes_find_blocks_lists():
    """The bench feeds the search's own block lists (``kv_index [Hq, T, W]``, ``kv_count``)."""
    from vllm_flexprefill import FlexPrefillConfig
    from vllm_flexprefill.kernels import KVSource, SparsePlan, find_blocks, index_to_masks
    from vllm_flexprefill.synthetic import planted_qkv

    n, B = 1500, 128
    q, k, v = (t.to(DEVICE) for t in planted_qkv(n, 4, 2, 64, B, query_aware_every=2, seed=3)[:3])
    plan = SparsePlan.build([n], [n], B, DEVICE)
    config = FlexPrefillConfig(gamma=0.9, selection="vsgrid", min_budget=1, dense_threshold=0)
    dense = torch.zeros(1, dtype=torch.bool, device=DEVICE)
    found = find_blocks(q, KVSource(k, v), plan, config, 64**-0.5, dense)
    got = sampled_block_mass(q, k, found.kv_index, found.kv_count, B, 64**-0.5, 16).cpu()
    mask = index_to_masks(plan, found.kv_index, found.kv_count)[0].cpu()
    geo = ChunkGeometry(n, n, B)
    want = sampled_masses(q.cpu().double(), k.cpu().double(), geo, 64**-0.5, 16, mask, False)
    index, count = found.kv_index.cpu().long(), found.kv_count.cpu()
    filled = torch.arange(index.shape[-1]) < count[..., None]
    want = want.gather(-1, index.clamp(0, geo.num_k_blocks - 1))
    err = (got[filled] - want[filled].float()).abs().max() / want[filled].abs().max()
    assert err < 2e-2, err


@pytest.mark.parametrize(
    "q_len, kv_len, heads, kv_heads, queries",
    [(1000, 1000, 4, 2, 16), (333, 1291, 8, 2, 8), (700, 700, 4, 1, 16)],
)
def test_grouped_matches_per_head(q_len, kv_len, heads, kv_heads, queries):
    """The KV-head-grouped kernel gives each query head the per-head kernel's masses on its
    own candidates, 0 on its group's other candidates."""
    from rerank_kernel import grouped_block_mass, union_lists

    g = torch.Generator().manual_seed(q_len + heads)
    B, D = 128, 64
    geo = ChunkGeometry(q_len, kv_len, B)
    q = torch.randn(q_len, heads, D, generator=g).to(DEVICE)
    k = (torch.randn(kv_len, kv_heads, D, generator=g) * 1.5).to(DEVICE)
    index, count, mask = candidates(geo, heads, 4, g)
    index, count = index.to(DEVICE), count.to(DEVICE)
    union, member, union_count = union_lists(mask.to(DEVICE), heads // kv_heads)
    got = grouped_block_mass(q, k, union, member, union_count, B, D**-0.5, queries).cpu()
    want = sampled_masses(q.cpu().double(), k.cpu().double(), geo, D**-0.5, queries, mask, False)
    group = heads // kv_heads
    slots = torch.arange(union.shape[-1]) < union_count.cpu()[..., None]  # [Hk, nq, U]
    slots = slots.repeat_interleave(group, 0)
    blocks = union.cpu().long().repeat_interleave(group, 0)
    want = want.gather(-1, blocks)  # 0 where the head does not list the block
    assert torch.isnan(got[~slots]).all()
    err = (got[slots] - want[slots].float()).abs().max()
    assert err < 1e-5, err
    assert (union_count.cpu() >= count.cpu().view(kv_heads, group, -1).max(1).values).all()
