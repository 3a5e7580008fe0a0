"""Block-sparse causal attention over selected (query block, key block) pairs.

One program per (query head, global query block). It loads the block's queries once,
then walks the head's sorted list of key blocks for that query block: every entry
but the last is a full block strictly below the diagonal (no mask needed); the last is
the diagonal block, always selected, where the causal and length masks apply. Keys and
values come straight from a contiguous tensor or from vLLM's paged cache, so cached
context is attended without a gather copy. GQA reads KV head ``h // group`` without
repeating K/V: the heads of a group run as neighbouring programs and share the tiles
through L2. Online softmax in base 2 with float32 accumulation; writes ``out`` in
place and, on request, the natural-log log-sum-exp of every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .kv_access import token_offsets
from .plan import KVSource, SparsePlan


@triton.jit
def _attend_tile(
    q, acc, m_i, l_i, tokens, kv_len, q_pos, k_start, table_row_ptr, kvh,
    k_ptr, v_ptr, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    scale_log2, d,
    DIAGONAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One key tile of the online softmax. Off-diagonal tiles are full and visible: no
    masks at all (when the head dim is a power of two); the diagonal tile masks."""
    valid = tokens < kv_len
    k_rows = token_offsets(tokens, valid, k_start, table_row_ptr, stride_kp, stride_ks, PAGED, PAGE_SIZE)
    v_rows = token_offsets(tokens, valid, k_start, table_row_ptr, stride_vp, stride_vs, PAGED, PAGE_SIZE)
    k_ptrs = k_ptr + k_rows[:, None] + kvh * stride_kh + d[None, :]
    v_ptrs = v_ptr + v_rows[:, None] + kvh * stride_vh + d[None, :]
    if DIAGONAL:
        kv_mask = valid[:, None] & (d < HEAD_DIM)[None, :]
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
    elif HEAD_DIM != BLOCK_D:
        k = tl.load(k_ptrs, mask=(d < HEAD_DIM)[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=(d < HEAD_DIM)[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
    if DIAGONAL:
        s = tl.where(valid[None, :] & (tokens[None, :] <= q_pos[:, None]), s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _block_sparse_attention_kernel(
    q_ptr, out_ptr, lse_ptr, stride_qt, stride_qh, stride_ot, stride_oh, stride_lt,
    k_ptr, v_ptr, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    table_ptr, stride_table,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row, block_request, block_row,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    WRITE_LSE: tl.constexpr, HEADS_FASTEST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    if HEADS_FASTEST:  # the heads of a KV group run side by side and share K/V in L2
        h = tl.program_id(0)
        g = tl.program_id(1)
    else:
        g = tl.program_id(0)
        h = tl.program_id(1)
    req = tl.load(block_request + g)
    r = tl.load(block_row + g)
    kv_len = tl.load(req_kv_len + req)
    context = kv_len - tl.load(req_q_len + req)
    q_start = tl.load(req_q_start + req)
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kvh = h // group

    q_pos = r * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    q_ok = (q_pos >= context) & (q_pos < kv_len)
    q_rows = (q_start + q_pos - context).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + h * stride_qh + d[None, :],
                mask=q_ok[:, None] & d_ok[None, :], other=0.0)
    tile_args = (k_ptr, v_ptr, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, scale_log2, d)

    m_i = tl.full([BLOCK_SIZE], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_SIZE], tl.float32)
    acc = tl.zeros([BLOCK_SIZE, BLOCK_D], tl.float32)
    index_row = index_ptr + h.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
    count = tl.load(count_ptr + h.to(tl.int64) * stride_ch + g)
    # Off-diagonal blocks: full and entirely visible.
    # One pipelined loop over key tiles: tile t is sub-tile t % SUBTILES of list entry t // SUBTILES.
    SUBTILES: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for t in range(0, (count - 1) * SUBTILES):
        c = tl.load(index_row + t // SUBTILES)
        tokens = c * BLOCK_SIZE + (t % SUBTILES) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc, m_i, l_i = _attend_tile(q, acc, m_i, l_i, tokens, kv_len, q_pos, k_start, table_row_ptr, kvh,
                                     *tile_args, False, HEAD_DIM, BLOCK_D, PAGED, PAGE_SIZE, DOT_PRECISION)
    # The diagonal block (always selected, always last): causal and length masks.
    for sub in tl.static_range(SUBTILES):
        tokens = r * BLOCK_SIZE + sub * BLOCK_N + tl.arange(0, BLOCK_N)
        acc, m_i, l_i = _attend_tile(q, acc, m_i, l_i, tokens, kv_len, q_pos, k_start, table_row_ptr, kvh,
                                     *tile_args, True, HEAD_DIM, BLOCK_D, PAGED, PAGE_SIZE, DOT_PRECISION)

    out = acc / l_i[:, None]
    tl.store(out_ptr + q_rows[:, None] * stride_ot + h * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])
    if WRITE_LSE:
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # base 2 -> natural log
        tl.store(lse_ptr + q_rows * stride_lt + h, lse, mask=q_ok)


@dataclass(frozen=True)
class AttentionLaunch:
    """Launch parameters of the attention kernel (``scripts/bench_kernels.py`` sweeps them)."""

    block_n: int  # key tile width (a divisor of the block size)
    num_warps: int
    num_stages: int
    heads_fastest: bool = True  # program order: heads of a query block side by side

    @classmethod
    def default(cls, block_size: int, head_dim: int) -> AttentionLaunch:
        return cls(64, 8, 2) if head_dim > 64 else cls(64, 4, 3)


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs (tests) multiply in full precision; half types use the tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def block_sparse_attention(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor | None = None,
    launch: AttentionLaunch | None = None,
) -> None:
    """Write the attention of the plan's query rows into ``out`` (and ``lse``).

    ``q, out [total_q, Hq, D]``; ``lse [total_q, Hq]`` float32 or None;
    ``kv_index [Hq, T, >= max_k_blocks]`` int32: for head ``h`` and global query block
    ``g``, the selected key blocks in increasing order, the diagonal block last;
    ``kv_count [Hq, T]`` int32: how many. Rows outside the plan are left untouched.
    """
    Hq, D = q.shape[1], q.shape[2]
    B = plan.block_size
    if plan.num_q_blocks == 0:
        return
    launch = launch or AttentionLaunch.default(B, D)
    grid = (Hq, plan.num_q_blocks) if launch.heads_fastest else (plan.num_q_blocks, Hq)
    _block_sparse_attention_kernel[grid](
        q, out, lse if lse is not None else out, q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        lse.stride(0) if lse is not None else 0,
        *kv.kernel_args()[:-2],
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row, plan.block_request, plan.block_row,
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        scale * math.log2(math.e), Hq // kv.num_kv_heads,
        PAGED=kv.paged, PAGE_SIZE=kv.kernel_args()[-1],
        HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), BLOCK_SIZE=B, BLOCK_N=min(launch.block_n, B),
        WRITE_LSE=lse is not None, HEADS_FASTEST=launch.heads_fastest, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )


def block_sparse_attention_reference(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, kv_index: torch.Tensor, kv_count: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch twin of :func:`block_sparse_attention`: ``(out, lse)`` for the plan's rows
    (other rows of ``out`` are zero), through ``reference.block_sparse_attention``."""
    from vllm_flexprefill.blocks import ChunkGeometry
    from vllm_flexprefill.reference import block_sparse_attention as reference

    out = torch.zeros_like(q)
    lse = torch.zeros(q.shape[:2], dtype=torch.float32, device=q.device)
    masks = index_to_masks(plan, kv_index, kv_count)
    for i, (q_len, kv_len) in enumerate(zip(plan.q_lens, plan.kv_lens)):
        geo = ChunkGeometry(q_len, kv_len, plan.block_size)
        start = int(plan.q_start[i])
        k, v = kv.request_kv(int(plan.k_start[i]), int(plan.table_row[i]), kv_len)
        rows = slice(start, start + q_len)
        out[rows], request_lse = reference(q[rows].cpu(), k.cpu(), v.cpu(), masks[i].cpu(), geo, scale)
        lse[rows] = request_lse.float()
    return out, lse


def index_to_masks(plan: SparsePlan, kv_index: torch.Tensor, kv_count: torch.Tensor) -> list[torch.Tensor]:
    """Per request, the ``[Hq, num_q_blocks, num_k_blocks]`` bool mask the lists describe."""
    Hq = kv_index.shape[0]
    width = kv_index.shape[2]
    listed = torch.arange(width, device=kv_index.device) < kv_count[..., None]  # [Hq, T, width]
    dense = torch.zeros(Hq, plan.num_q_blocks, width + 1, dtype=torch.bool, device=kv_index.device)
    dense.scatter_(2, torch.where(listed, kv_index.long(), width), True)
    offsets = plan.q_block_offset.tolist()
    return [
        dense[:, offsets[i] : offsets[i + 1], : -(-kv_len // plan.block_size)]
        for i, kv_len in enumerate(plan.kv_lens)
    ]
