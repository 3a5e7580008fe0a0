"""The query-aware grid: for each query-aware head, the causal row-softmax of the pooled
queries of the chunk's query blocks against the pooled keys of all key blocks.

One program per (KV head, global query block) serves the query heads of the KV head's
group together (each key mean read once for all of them); a program whose heads are none
query-aware returns at once, so the cost follows the query-aware heads' groups. A first
sweep over the key blocks writes each row's logits and its running maximum and sum; a
second turns the logits it wrote into probabilities (the key means are read once).
Output ``grid [Hq, T, max_k_blocks]`` float32 (row ``g`` = global query block
``g``) comes zeroed: entries above the diagonal, past a request's end, or of other heads
stay 0. Request ``i``'s grid is thus the contiguous run of rows
``q_block_offset[i] ..``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .plan import SparsePlan


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_gh", "stride_gg"])
def _query_aware_grid_kernel(
    qmean_ptr, stride_qg, stride_qh,  # [T, Hq, D]
    kmean_ptr, stride_kr, stride_kh, stride_kc,  # [R, Hkv, max_k_blocks, D]
    query_aware_ptr, stride_qa_r,  # [R, Hq] int8
    block_request, block_row,
    grid_ptr, stride_gh, stride_gg,
    scale, group,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    GROUP: tl.constexpr,  # group, rounded up to a power of two
):  # fmt: skip
    kv_head = tl.program_id(0)
    g = tl.program_id(1)
    req = tl.load(block_request + g)
    r = tl.load(block_row + g)
    i = tl.arange(0, GROUP)
    heads = kv_head * group + i
    query_aware = (i < group) & (
        tl.load(query_aware_ptr + req * stride_qa_r + heads, mask=i < group, other=0)
        != 0
    )
    if tl.max(query_aware.to(tl.int32), 0) == 0:
        return
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    qm = tl.load(qmean_ptr + g * stride_qg + heads[:, None] * stride_qh + d[None, :],
                 mask=query_aware[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    k_base = kmean_ptr + req.to(tl.int64) * stride_kr + kv_head * stride_kh
    rows = grid_ptr + heads.to(tl.int64) * stride_gh + g.to(tl.int64) * stride_gg

    m_i = tl.full([GROUP], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP], tl.float32)
    for start in range(0, r + 1, CHUNK):
        c = start + tl.arange(0, CHUNK)
        ok = c <= r
        km = tl.load(k_base + c[:, None] * stride_kc + d[None, :],
                     mask=ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
        logits = tl.sum(km[:, None, :] * qm[None, :, :], 2) * scale  # [CHUNK, GROUP]
        logits = tl.where(ok[:, None], logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, 0))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(logits - m_new[None, :]), 0)
        m_i = m_new
        written = ok[:, None] & query_aware[None, :]
        tl.store(rows[None, :] + c[:, None], logits, mask=written)
    tl.debug_barrier()  # the logits written by other threads are visible
    for start in range(0, r + 1, CHUNK):
        c = start + tl.arange(0, CHUNK)
        written = (c <= r)[:, None] & query_aware[None, :]
        cells = rows[None, :] + c[:, None]
        logits = tl.load(cells, mask=written, other=0.0)
        tl.store(cells, tl.exp(logits - m_i[None, :]) / l_i[None, :], mask=written)


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
    ``grid`` when given: zeroed, contiguous)."""
    T, Hq, D = query_means.shape
    Hkv = key_means.shape[1]
    if grid is None:
        grid = torch.zeros(
            Hq, T, plan.max_k_blocks, dtype=torch.float32, device=query_means.device
        )
    if T:
        qa = query_aware.to(torch.int8).contiguous()
        group = Hq // Hkv
        _query_aware_grid_kernel[(Hkv, T)](
            query_means, query_means.stride(0), query_means.stride(1),
            key_means, key_means.stride(0), key_means.stride(1), key_means.stride(2),
            qa, qa.stride(0),
            plan.block_request, plan.block_row,
            grid, grid.stride(0), grid.stride(1),
            scale, group,
            HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), CHUNK=16,
            GROUP=triton.next_power_of_2(group), num_warps=4,
        )  # fmt: skip
    return grid
