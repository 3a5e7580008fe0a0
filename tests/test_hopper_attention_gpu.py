"""The warp-specialised Hopper kernel (``kernels/hopper_attention.py``) on an sm_90 GPU,
against the reference and the portable kernel, at 128- and 64-token blocks: GQA, odd
lengths, partial blocks,
unaligned cached context, a one-token chunk, contiguous keys and paged ones whose
stale page tails hold NaN, outputs poisoned first. Run with ``pytest -m gpu``."""

import pytest
import torch
from helpers import HOPPER_SHAPES, PAGE_SIZES, rel_error, scattered_batch
from kernel_twins import block_sparse_attention_twin
from test_kernels import block_lists, key_source, random_selection

from vllm_flexprefill.kernels import hopper_attention, hopper_common
from vllm_flexprefill.kernels.hopper_attention import HopperLaunch
from vllm_flexprefill.kernels.sparse_attention import (
    AttentionLaunch,
    block_sparse_attention,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
        reason="needs a Hopper GPU",
    ),
]

# a fresh prompt, a chunk after 4001 cached tokens, one token after 4096
Q_LENS, KV_LENS = (3000, 1000, 1), (3000, 5001, 4097)
Q_STARTS = [0, 3100, 4200]  # gaps between the requests' rows stay untouched
ROWS = 4300


# 128-token blocks: one consumer partition (8 warps) everywhere; two (4 warps: the
# default), free or taking turns, on Llama's shape. 64-token blocks: one consumer of
# 4 warps, every shape
CASES = [
    (HopperLaunch(8, 3), 128, page, *shape)
    for page in PAGE_SIZES
    for shape in HOPPER_SHAPES
]
CASES += [
    (launch, 128, page, *HOPPER_SHAPES[0])
    for launch in (HopperLaunch(4, 3), HopperLaunch(4, 3, ping_pong=True))
    for page in PAGE_SIZES
]
CASES += [
    (HopperLaunch(4, 3), 64, page, *shape)
    for page in PAGE_SIZES
    for shape in HOPPER_SHAPES
]


@pytest.mark.parametrize("hopper, block, page_size, hq, hkv, d, dtype", CASES, ids=str)
def test_warp_specialized_attention_matches_reference(
    hopper, block, page_size, hq, hkv, d, dtype
):
    q_full, k, v, plan = scattered_batch(
        Q_LENS, KV_LENS, Q_STARTS, ROWS, hq, hkv, d, dtype, "cuda", d + hq, block
    )
    kv_index, kv_count = block_lists(plan, *random_selection(plan, hq, seed=3))
    kv = key_source(k, v, page_size, KV_LENS)
    assert hopper_common.supports(q_full, kv, block, hopper_attention.BLOCK_SIZES)

    outs, lses = [], []
    for warp_specialized in (hopper, None):
        launch = AttentionLaunch(
            block, 8, 2, tma=True, warp_specialized=warp_specialized
        )
        outs.append(torch.full_like(q_full, float("nan")))
        lses.append(torch.full((ROWS, hq), float("nan"), device="cuda"))
        block_sparse_attention(
            q_full, kv, plan, kv_index, kv_count, d**-0.5, outs[-1], lses[-1], launch
        )
    want_out, want_lse = block_sparse_attention_twin(
        q_full, kv, plan, kv_index, kv_count, d**-0.5
    )
    rows = torch.cat(
        [torch.arange(s, s + n) for s, n in zip(Q_STARTS, Q_LENS, strict=True)]
    )
    gaps = torch.ones(ROWS, dtype=torch.bool)
    gaps[rows] = False
    out, lse = outs[0].cpu(), lses[0].cpu()
    assert not out[rows].isnan().any() and out[gaps].isnan().all()
    assert not lse[rows].isnan().any() and lse[gaps].isnan().all()
    assert rel_error(out[rows], want_out[rows]) < 1e-2
    assert rel_error(out[rows], outs[1][rows]) < 1e-2
    assert (lse[rows] - want_lse.cpu()[rows]).abs().max().item() < 1e-2
