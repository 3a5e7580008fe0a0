"""The query-aware grid: for each head that selects from it (the query-aware heads, and
every head of a vsgrid request), the causal row-softmax of the pooled queries of the
chunk's query blocks against the pooled keys of all key blocks.

One program per (query head, request, tile of ``ROWS`` of the request's query blocks);
heads that do not select from the grid for the request, and tiles past its query
blocks, return at once, so the cost follows those heads. A program takes its rows'
pooled queries against a chunk of pooled keys at a time as one matrix product on the
tensor cores (in ``tf32x3``: three tf32 products, float32 accuracy), so each key mean
is read once a tile, not once a row. The first sweep stores the rows' logits and keeps
each row's running maximum and sum; the second turns the stored logits into
probabilities in place.
Output ``grid [Hq, T, max_k_blocks]`` float32 (row ``g`` = global query block ``g``): a
grid head's rows are written whole, 0 above the diagonal and past the request's
keys; other heads' rows are left as they were. Request ``i``'s grid is thus the
contiguous run of rows ``q_block_offset[i] ..``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

from .plan import SparsePlan

ROW_TILE = 256  # key blocks a step of the second sweep


def tile_blocks(head_dim: int) -> int:
    """The query blocks a program takes, and the key blocks a step of its first sweep
    reads: 64 up to head dim 128, 32 at 256 (float32 means)."""
    return 64 * 128 // max(head_dim, 128)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_gh", "stride_gg", "width"])
def _query_aware_grid_kernel(
    qmean_ptr, stride_qg, stride_qh,  # [T, Hq, D]
    kmean_ptr, stride_kr, stride_kh, stride_kc,  # [R, Hkv, max_k_blocks, D]
    from_grid_ptr, stride_fg_r,  # [R, Hq] int8
    q_block_offset, block_row,
    grid_ptr, stride_gh, stride_gg, width,
    scale, group,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    CHUNK: tl.constexpr, ROW_TILE: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    req = tl.program_id(1)
    first = tl.load(q_block_offset + req) + tl.program_id(2) * ROWS
    end = tl.load(q_block_offset + req + 1)
    if tl.load(from_grid_ptr + req * stride_fg_r + h) == 0 or first >= end:
        return
    g = first + tl.arange(0, ROWS)
    row_ok = g < end
    r = tl.load(block_row + g, mask=row_ok, other=-1)  # each row's last key block
    last = tl.max(r, 0)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    qm = tl.load(qmean_ptr + g[:, None] * stride_qg + h * stride_qh + d[None, :],
                 mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    k_base = kmean_ptr + req.to(tl.int64) * stride_kr + (h // group) * stride_kh
    rows = grid_ptr + h.to(tl.int64) * stride_gh + g.to(tl.int64)[:, None] * stride_gg

    m_i = tl.full([ROWS], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    for start in range(0, last + 1, CHUNK):
        c = start + tl.arange(0, CHUNK)
        km = tl.load(k_base + c[:, None] * stride_kc + d[None, :],
                     mask=(c <= last)[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
        logits = tl.dot(qm, tl.trans(km), input_precision="tf32x3") * scale
        seen = c[None, :] <= r[:, None]
        logits = tl.where(seen, logits, float("-inf"))
        tl.store(rows + c[None, :], logits, mask=seen)
        m_new = tl.maximum(m_i, tl.max(logits, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past the end
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(logits - m_safe[:, None]), 1)
        m_i = m_new
    tl.debug_barrier()  # the logits stored by every thread, before any reads them
    top = tl.where(row_ok, m_i, 0.0)  # rows past the end keep nothing
    inverse = 1.0 / tl.where(row_ok, l_i, 1.0)
    for start in range(0, width, ROW_TILE):
        c = start + tl.arange(0, ROW_TILE)
        seen = c[None, :] <= r[:, None]
        logits = tl.load(rows + c[None, :], mask=seen, other=float("-inf"))
        probs = tl.exp(logits - top[:, None]) * inverse[:, None]
        tl.store(rows + c[None, :], tl.where(seen, probs, 0.0),
                 mask=row_ok[:, None] & (c < width)[None, :])  # fmt: skip


def query_aware_grid(
    query_means: torch.Tensor,
    key_means: torch.Tensor,
    from_grid: torch.Tensor,
    plan: SparsePlan,
    scale: float,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``query_means [T, Hq, D]``, ``key_means [R, Hkv, max_k_blocks, D]`` (float32),
    ``from_grid [R, Hq]`` bool or int8 -> ``grid [Hq, T, max_k_blocks]`` (written into
    ``grid`` when given, contiguous: only the rows of the heads that select from the
    grid; a new grid holds zeros in the others)."""
    T, Hq, D = query_means.shape
    Hkv = key_means.shape[1]
    if grid is None:
        grid = torch.zeros(
            Hq, T, plan.max_k_blocks, dtype=torch.float32, device=query_means.device
        )
    if T:
        pooled = from_grid.to(torch.int8).contiguous()
        rows = tile_blocks(D)
        tiles = cdiv(plan.max_q_blocks, rows)
        _query_aware_grid_kernel[(Hq, plan.num_requests, tiles)](
            query_means, query_means.stride(0), query_means.stride(1),
            key_means, key_means.stride(0), key_means.stride(1), key_means.stride(2),
            pooled, pooled.stride(0),
            plan.q_block_offset, plan.block_row,
            grid, grid.stride(0), grid.stride(1), grid.shape[2],
            scale, Hq // Hkv,
            HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), ROWS=rows, CHUNK=rows,
            ROW_TILE=ROW_TILE, num_warps=4,
        )  # fmt: skip
    return grid
