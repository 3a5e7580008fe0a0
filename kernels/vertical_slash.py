"""The vertical-slash heads' key-block columns and diagonal offsets
(``reference.top_blocks`` with the budgets of ``reference.budget_blocks``), every head
of a batch in one launch.

Row ``(kind, request, head)`` (kind 0: columns, 1: offsets) keeps its ``budget``
highest scores ``blocks + forced``, ties going to the lower index (as a stable
descending sort): entry ``i`` is kept when fewer than ``budget`` entries rank above
it, an entry ``j`` ranking above when its score is higher, or equal with ``j < i``.
A program ranks ``TILE`` entries of a row against the whole row. The budget: the
top-mass count of the row's tokens as blocks, ``count // block_size + 1``, clamped to
the request's ``[low, high]``; ``low`` for a query-aware head; the request's own for a
``vsgrid`` request (its forced blocks only).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

TILE = 64  # entries a program ranks
STEP = 128  # entries it compares them with per loop step


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["num_requests", "width"])
def _top_blocks_kernel(
    blocks_ptr,  # [2, R, Hq, width] float32 scores
    forced_ptr,  # [2, R, width] float32: +inf (kept), 0, or -inf (past the keys)
    count_ptr,  # [2, R, Hq] int32: top-mass token counts
    low_ptr, high_ptr,  # [R] int: the budget's bounds in blocks
    query_aware_ptr,  # [R, Hq] int8
    vsgrid_ptr,  # [R] int8
    vsgrid_budget_ptr,  # [2, R] int: a vsgrid request's budgets
    out_ptr,  # [2, R, Hq, width] int8: kept
    num_requests, width, block_size,
    TILE: tl.constexpr, STEP: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)  # (kind, request, head)
    tile = tl.program_id(1)
    num_heads = tl.num_programs(0) // (2 * num_requests)
    kind = row // (num_requests * num_heads)
    req = row // num_heads % num_requests
    head = row % num_heads
    low = tl.load(low_ptr + req).to(tl.int32)
    budget = tl.load(count_ptr + row) // block_size + 1
    budget = tl.minimum(tl.maximum(budget, low), tl.load(high_ptr + req).to(tl.int32))
    if tl.load(query_aware_ptr + req * num_heads + head) != 0:
        budget = low
    if tl.load(vsgrid_ptr + req) != 0:
        budget = tl.load(vsgrid_budget_ptr + kind * num_requests + req).to(tl.int32)
    scores = blocks_ptr + row.to(tl.int64) * width
    forced = forced_ptr + (kind * num_requests + req).to(tl.int64) * width

    i = tile * TILE + tl.arange(0, TILE)
    i_ok = i < width
    mine = tl.load(scores + i, mask=i_ok, other=0.0) + tl.load(
        forced + i, mask=i_ok, other=0.0
    )
    above = tl.zeros([TILE], tl.int32)
    for start in range(0, width, STEP):
        j = start + tl.arange(0, STEP)
        j_ok = j < width
        theirs = tl.load(scores + j, mask=j_ok, other=0.0) + tl.load(
            forced + j, mask=j_ok, other=0.0
        )
        ranks_above = (theirs[None, :] > mine[:, None]) | (
            (theirs[None, :] == mine[:, None]) & (j[None, :] < i[:, None])
        )
        above += tl.sum((ranks_above & j_ok[None, :]).to(tl.int32), 1)
    tl.store(out_ptr + row.to(tl.int64) * width + i, (above < budget).to(tl.int8), i_ok)


def top_blocks(
    blocks: torch.Tensor,
    forced: torch.Tensor,
    counts: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    query_aware: torch.Tensor,
    vsgrid: torch.Tensor,
    vsgrid_budgets: torch.Tensor,
    block_size: int,
) -> torch.Tensor:
    """``blocks [2, R, Hq, W]`` float32 (the probe's vertical and slash block scores),
    ``forced [2, R, W]`` float32, ``counts [2, R, Hq]`` int32 (top-mass token counts),
    ``low, high [R]`` (budget bounds in blocks), ``query_aware [R, Hq]`` int8,
    ``vsgrid [R]`` bool or int8, ``vsgrid_budgets [2, R]`` -> kept ``[2, R, Hq, W]``
    int8: columns, then offsets (see the module docstring). All contiguous."""
    _, R, Hq, W = blocks.shape
    kept = torch.empty(blocks.shape, dtype=torch.int8, device=blocks.device)
    if R == 0 or W == 0:
        return kept
    _top_blocks_kernel[(2 * R * Hq, cdiv(W, TILE))](
        blocks, forced, counts, low, high, query_aware, vsgrid.to(torch.int8),
        vsgrid_budgets, kept, R, W, block_size, TILE=TILE, STEP=STEP, num_warps=4,
    )  # fmt: skip
    return kept
