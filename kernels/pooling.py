"""Block means of keys and queries (the pooled vectors of the pattern estimate and of
the query-aware grid), in float32, dequantised (fp8 inputs times their scales).

* ``key_block_means``: ``[R, Hkv, max_k_blocks, D]``, key block ``c`` of request ``i``
  averaged over its real tokens ``[c*B, min((c+1)*B, kv_len))``, read from contiguous or
  paged K; blocks past a request's end are left unwritten.
* ``query_block_means``: ``[T, Hq, D]``, global query block ``g`` averaged over the
  chunk's queries in it (a partial first or last block averages fewer); only for the
  heads that select from the grid (the query-aware heads, and every head of a vsgrid
  request: it reads every query, the largest read of the search), the other heads'
  rows are left unwritten.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kv_access import query_block_owner, token_offsets
from .plan import KVSource, SparsePlan
from .quant import scale_of


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_table"])
def _key_means_kernel(
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_kv_len, req_k_start, req_table_row,
    out_ptr, stride_or, stride_oh, stride_oc,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    req = tl.program_id(0)
    kvh = tl.program_id(1)
    c = tl.program_id(2)
    kv_len = tl.load(req_kv_len + req)
    if c * BLOCK >= kv_len:
        return
    keys = c * BLOCK + tl.arange(0, BLOCK)
    ok = keys < kv_len
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    rows = token_offsets(keys, ok, tl.load(req_k_start + req), table_row_ptr,
                         stride_kp, stride_ks, PAGED, PAGE_SIZE)  # fmt: skip
    d = tl.arange(0, BLOCK_D)
    k = tl.load(
        k_ptr + rows[:, None] + kvh * stride_kh + d[None, :],
        mask=ok[:, None] & (d < HEAD_DIM)[None, :],
        other=0.0,
    )
    mean = tl.sum(k.to(tl.float32), 0) * (
        scale_of(k_scale_ptr) / tl.minimum(kv_len - c * BLOCK, BLOCK)
    )
    tl.store(
        out_ptr + req * stride_or + kvh * stride_oh + c * stride_oc + d,
        mean,
        mask=d < HEAD_DIM,
    )


@triton.jit
def _query_means_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    req_q_start, req_q_len, req_kv_len, block_request, block_row,
    from_grid_ptr, stride_fg_r,  # [R, Hq] int8
    out_ptr, stride_og, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    g, h, req, r, from_grid = query_block_owner(
        block_request, block_row, from_grid_ptr, stride_fg_r
    )
    if not from_grid:
        return
    kv_len = tl.load(req_kv_len + req)
    context = kv_len - tl.load(req_q_len + req)
    pos = r * BLOCK + tl.arange(0, BLOCK)
    ok = (pos >= context) & (pos < kv_len)
    rows = (tl.load(req_q_start + req) + pos - context).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + h * stride_qh + d[None, :],
        mask=ok[:, None] & (d < HEAD_DIM)[None, :],
        other=0.0,
    )
    mean = tl.sum(q.to(tl.float32), 0) * (
        scale_of(q_scale_ptr) / tl.sum(ok.to(tl.float32), 0)
    )
    tl.store(out_ptr + g * stride_og + h * stride_oh + d, mean, mask=d < HEAD_DIM)


def key_block_means(kv: KVSource, plan: SparsePlan, head_dim: int) -> torch.Tensor:
    """Keys of head dim ``head_dim`` from ``kv`` -> ``[R, Hkv, max_k_blocks, D]``
    float32 (see the module's docstring)."""
    out = torch.empty(
        plan.num_requests,
        kv.num_kv_heads,
        plan.max_k_blocks,
        head_dim,
        dtype=torch.float32,
        device=kv.key.device,
    )
    _key_means_kernel[(plan.num_requests, kv.num_kv_heads, plan.max_k_blocks)](
        *kv.key_args(),
        plan.kv_len, plan.k_start, plan.table_row,
        out, out.stride(0), out.stride(1), out.stride(2),
        PAGED=kv.paged, PAGE_SIZE=kv.page_size,
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK=plan.block_size, num_warps=4,
    )  # fmt: skip
    return out


def query_block_means(
    q: torch.Tensor,
    plan: SparsePlan,
    from_grid: torch.Tensor,
    q_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``q [total_q, Hq, D]``; ``from_grid [R, Hq]`` bool or int8: the heads to pool
    (see the module's docstring); ``q_scale``: fp8 queries' scale. Returns ``[T, Hq,
    D]`` float32."""
    D = q.shape[2]
    out = torch.empty(
        plan.num_q_blocks, q.shape[1], D, dtype=torch.float32, device=q.device
    )
    if plan.num_q_blocks:
        pooled = from_grid.to(torch.int8).contiguous()
        _query_means_kernel[(plan.num_q_blocks, q.shape[1])](
            q, q.stride(0), q.stride(1), q_scale,
            plan.q_start, plan.q_len, plan.kv_len, plan.block_request, plan.block_row,
            pooled, pooled.stride(0),
            out, out.stride(0), out.stride(1),
            HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), BLOCK=plan.block_size,
            num_warps=4,
        )  # fmt: skip
    return out
