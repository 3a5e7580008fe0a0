"""The query-aware grid: for each query-aware head, the causal row-softmax of the pooled
queries of the chunk's query blocks against the pooled keys of all key blocks.

One program per (query head, global query block); heads that are not query-aware return
at once, so the cost follows the number of query-aware heads. A program reads each
earlier key block's mean once: its first sweep stores the row's logits (and keeps the
running maximum and sum), the second turns the stored logits into probabilities in
place. Output ``grid [Hq, T, max_k_blocks]`` float32 (row ``g`` = global query block
``g``): a query-aware head's rows are written whole, 0 above the diagonal and past the
request's keys; other heads' rows are left as they were. Request ``i``'s grid is thus
the contiguous run of rows ``q_block_offset[i] ..``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kv_access import query_block_owner
from .plan import SparsePlan


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_gh", "stride_gg", "width"])
def _query_aware_grid_kernel(
    qmean_ptr, stride_qg, stride_qh,  # [T, Hq, D]
    kmean_ptr, stride_kr, stride_kh, stride_kc,  # [R, Hkv, max_k_blocks, D]
    query_aware_ptr, stride_qa_r,  # [R, Hq] int8
    block_request, block_row,
    grid_ptr, stride_gh, stride_gg, width,
    scale, group,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    ROW_TILE: tl.constexpr,
):  # fmt: skip
    g, h, req, r, query_aware = query_block_owner(
        block_request, block_row, query_aware_ptr, stride_qa_r, HEADS_FIRST=True
    )
    if not query_aware:
        return
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    qm = tl.load(qmean_ptr + g * stride_qg + h * stride_qh + d, mask=d_ok, other=0.0)
    k_base = kmean_ptr + req.to(tl.int64) * stride_kr + (h // group) * stride_kh
    row = grid_ptr + h.to(tl.int64) * stride_gh + g.to(tl.int64) * stride_gg

    m_i = tl.full([], float("-inf"), tl.float32)
    l_i = tl.full([], 0.0, tl.float32)
    for start in range(0, r + 1, CHUNK):
        c = start + tl.arange(0, CHUNK)
        ok = c <= r
        km = tl.load(k_base + c[:, None] * stride_kc + d[None, :],
                     mask=ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
        logits = tl.where(ok, tl.sum(km * qm[None, :], 1) * scale, float("-inf"))
        tl.store(row + c, logits, mask=ok)
        m_new = tl.maximum(m_i, tl.max(logits, 0))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(logits - m_new), 0)
        m_i = m_new
    tl.debug_barrier()  # the logits stored by every thread, before any reads them
    for start in range(0, width, ROW_TILE):
        c = start + tl.arange(0, ROW_TILE)
        ok = c <= r
        logits = tl.load(row + c, mask=ok, other=float("-inf"))
        tl.store(row + c, tl.exp(logits - m_i) / l_i, mask=c < width)


def query_aware_grid(
    query_means: torch.Tensor,
    key_means: torch.Tensor,
    query_aware: torch.Tensor,
    plan: SparsePlan,
    scale: float,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``query_means [T, Hq, D]``, ``key_means [R, Hkv, max_k_blocks, D]`` (float32),
    ``query_aware [R, Hq]`` bool or int8 -> ``grid [Hq, T, max_k_blocks]`` (written into
    ``grid`` when given, contiguous: only the query-aware heads' rows; a new grid
    holds zeros in the others)."""
    T, Hq, D = query_means.shape
    Hkv = key_means.shape[1]
    if grid is None:
        grid = torch.zeros(
            Hq, T, plan.max_k_blocks, dtype=torch.float32, device=query_means.device
        )
    if T:
        qa = query_aware.to(torch.int8).contiguous()
        _query_aware_grid_kernel[(Hq, T)](
            query_means, query_means.stride(0), query_means.stride(1),
            key_means, key_means.stride(0), key_means.stride(1), key_means.stride(2),
            qa, qa.stride(0),
            plan.block_request, plan.block_row,
            grid, grid.stride(0), grid.stride(1), grid.shape[2],
            scale, Hq // Hkv,
            HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), CHUNK=32, ROW_TILE=512,
            num_warps=4,
        )  # fmt: skip
    return grid
