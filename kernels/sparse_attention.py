"""Block-sparse causal attention over selected (query block, key block) pairs.

One program per (query head, global query block). It loads the block's queries once,
then walks the head's sorted list of key blocks for that query block: every entry
but the last is a full block strictly below the diagonal (no mask needed); the last is
the diagonal block, always selected, where the causal and length masks apply. Keys and
values come straight from a contiguous tensor or from vLLM's paged cache, so cached
context is attended without a gather copy; fp8 queries, keys and values are
dequantised in registers (``quant.py``). GQA reads KV head ``h // group`` without
repeating K/V: the heads of a group run as neighbouring programs and share the tiles
through L2. Online softmax in base 2 with float32 accumulation; writes ``out`` in
place and, on request, the natural-log log-sum-exp of every row.

This portable kernel runs everywhere (the CPU tests run it in the interpreter); on
Hopper, a launch with ``warp_specialized`` hands the batches it covers to the
warp-specialised Gluon kernel of ``hopper_attention.py``, which computes the same.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from . import hopper_attention, hopper_common
from .hopper_attention import HopperLaunch
from .kv_access import bulk_copyable, page_view, token_offsets
from .plan import KVSource, SparsePlan
from .quant import E4M3_MAX, is_fp8, query_key_products, scale_of, widened
from .utils import dot_precision


@triton.jit
def _load_kv_tile(
    tokens, kv_len, k_start, table_row_ptr, kvh, d,
    k_ptr, v_ptr, k_desc, v_desc,
    stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    DIAGONAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, TMA: tl.constexpr,
    VALUE_TYPE: tl.constexpr,
):  # fmt: skip
    """K and V ``[BLOCK_N, BLOCK_D]`` for the tokens, V in ``VALUE_TYPE`` (fp8 values
    widened to it, or kept when it is their own type). Off-diagonal tiles are full: no
    masks (and with TMA, one bulk copy per tile, which lies inside one page); the
    diagonal tile masks tokens past the sequence (a page's stale tail may hold
    anything, even NaN)."""
    if TMA and not DIAGONAL:
        first = tl.min(tokens, 0)
        if PAGED:
            page = tl.load(table_row_ptr + first // PAGE_SIZE)
            slot = first % PAGE_SIZE
        else:
            page = 0
            slot = k_start + first
        k = k_desc.load([page, slot, kvh * HEAD_DIM]).reshape(BLOCK_N, BLOCK_D)
        v = v_desc.load([page, slot, kvh * HEAD_DIM]).reshape(BLOCK_N, BLOCK_D)
    else:
        valid = tokens < kv_len
        k_rows = token_offsets(tokens, valid, k_start, table_row_ptr,
                               stride_kp, stride_ks, PAGED, PAGE_SIZE)  # fmt: skip
        v_rows = token_offsets(tokens, valid, k_start, table_row_ptr,
                               stride_vp, stride_vs, PAGED, PAGE_SIZE)  # fmt: skip
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
    return k, widened(v, VALUE_TYPE)


@triton.jit
def _online_softmax_step(
    q, k, v, acc, m_i, l_i, tokens, kv_len, q_pos, scale_log2,
    DIAGONAL: tl.constexpr, DOT_PRECISION: tl.constexpr, P_SCALE: tl.constexpr,
):  # fmt: skip
    """Fold one key tile into the running max ``m_i`` (base 2, scaled), sum ``l_i`` and
    output ``acc`` (``P_SCALE`` times the probabilities' product with ``v``); the scale
    is applied inside the exponent's fused multiply-add."""
    s = query_key_products(q, k, DOT_PRECISION)
    if DIAGONAL:
        s = tl.where(
            (tokens[None, :] < kv_len) & (tokens[None, :] <= q_pos[:, None]),
            s,
            float("-inf"),
        )
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
    p = tl.math.exp2(s * scale_log2 - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if P_SCALE != 1.0:  # fp8 probabilities, scaled into e4m3's range
        acc = tl.dot((p * P_SCALE).to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=[
        "stride_table",
        "stride_ih",
        "stride_ib",
        "stride_ch",
        "num_q_blocks",
    ]
)
def _block_sparse_attention_kernel(
    q_ptr, out_ptr, lse_ptr, stride_qt, stride_qh, stride_ot, stride_oh, stride_lt,
    k_ptr, v_ptr, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    table_ptr, stride_table, k_desc, v_desc,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    block_request, block_row,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,
    scale_log2, q_scale_ptr, k_scale_ptr, v_scale_ptr, group, num_q_blocks,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, TMA: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    WRITE_LSE: tl.constexpr, HEADS_FASTEST: tl.constexpr, HEAVY_FIRST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FP8_PROBABILITIES: tl.constexpr,
):  # fmt: skip
    if (
        HEADS_FASTEST
    ):  # the heads of a KV group run side by side, sharing K/V tiles in L2
        h = tl.program_id(0)
        g = tl.program_id(1)
    else:
        g = tl.program_id(0)
        h = tl.program_id(1)
    if HEAVY_FIRST:  # later query blocks see more key blocks: start them first
        g = num_q_blocks - 1 - g
    req = tl.load(block_request + g)
    r = tl.load(block_row + g)
    kv_len = tl.load(req_kv_len + req)
    context = kv_len - tl.load(req_q_len + req)
    q_start = tl.load(req_q_start + req)
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kvh = h // group
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    # the probability-value product's type, and the probabilities' scale
    if FP8_PROBABILITIES:
        value_type: tl.constexpr = v_ptr.dtype.element_ty
        P_SCALE: tl.constexpr = E4M3_MAX
    else:
        value_type: tl.constexpr = out_ptr.dtype.element_ty
        P_SCALE: tl.constexpr = 1.0

    q_pos = r * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    q_ok = (q_pos >= context) & (q_pos < kv_len)
    q_rows = (q_start + q_pos - context).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(
        q_ptr + q_rows[:, None] * stride_qt + h * stride_qh + d[None, :],
        mask=q_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    kv_args = (
        k_start, table_row_ptr, kvh, d,
        k_ptr, v_ptr, k_desc, v_desc,
        stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    )  # fmt: skip

    m_i = tl.full([BLOCK_SIZE], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_SIZE], tl.float32)
    acc = tl.zeros([BLOCK_SIZE, BLOCK_D], tl.float32)
    index_row = index_ptr + h.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
    count = tl.load(count_ptr + h.to(tl.int64) * stride_ch + g)
    # Off-diagonal blocks, full and entirely visible, in one pipelined loop over key
    # tiles: tile t is sub-tile t % SUBTILES of list entry t // SUBTILES.
    SUBTILES: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for t in range(0, (count - 1) * SUBTILES):
        c = tl.load(index_row + t // SUBTILES)
        tokens = c * BLOCK_SIZE + (t % SUBTILES) * BLOCK_N + tl.arange(0, BLOCK_N)
        # fmt: off
        k, v = _load_kv_tile(tokens, kv_len, *kv_args,
                             False, HEAD_DIM, BLOCK_D, BLOCK_N, PAGED, PAGE_SIZE, TMA,
                             value_type)
        acc, m_i, l_i = _online_softmax_step(q, k, v, acc, m_i, l_i, tokens, kv_len,
                                             q_pos, scale_log2, False, DOT_PRECISION,
                                             P_SCALE)
        # fmt: on
    # The diagonal block (always selected, always last): causal and length masks.
    for sub in tl.static_range(SUBTILES):
        tokens = r * BLOCK_SIZE + sub * BLOCK_N + tl.arange(0, BLOCK_N)
        # fmt: off
        k, v = _load_kv_tile(tokens, kv_len, *kv_args,
                             True, HEAD_DIM, BLOCK_D, BLOCK_N, PAGED, PAGE_SIZE, TMA,
                             value_type)
        acc, m_i, l_i = _online_softmax_step(q, k, v, acc, m_i, l_i, tokens, kv_len,
                                             q_pos, scale_log2, True, DOT_PRECISION,
                                             P_SCALE)
        # fmt: on

    out = acc * (scale_of(v_scale_ptr) / (l_i * P_SCALE))[:, None]
    tl.store(
        out_ptr + q_rows[:, None] * stride_ot + h * stride_oh + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=q_ok[:, None] & d_ok[None, :],
    )
    if WRITE_LSE:
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # base 2 -> natural log
        tl.store(lse_ptr + q_rows * stride_lt + h, lse, mask=q_ok)


@dataclass(frozen=True)
class AttentionLaunch:
    """Launch parameters of the attention kernel
    (``scripts/bench_kernels.py`` sweeps them)."""

    block_n: int  # key tile width (a divisor of the block size)
    num_warps: int
    num_stages: int
    # program order: heads of a query block side by side (else its query blocks)
    heads_fastest: bool = False
    # program order: last query blocks (the longest lists) first
    heavy_first: bool = False
    tma: bool = False  # bulk tensor copies for off-diagonal K/V tiles, where they fit
    # fp8 values: the probabilities in fp8 too (see quant.py), not the values widened
    fp8_probabilities: bool = False
    # Hopper: the warp-specialised Gluon kernel (hopper_attention.py) with these
    # parameters wherever it covers the batch (the fields above then apply only to
    # the batches it does not cover)
    warp_specialized: HopperLaunch | None = None

    @classmethod
    def default(cls, head_dim: int) -> AttentionLaunch:
        """Best measured on the H200 (benchmarks/NOTES.md). Head dim 128 on Hopper:
        the warp-specialised kernel with two consumer partitions and three K/V
        stages (561 TF/s at 128K against the portable kernel's 426; at 64-token
        blocks one partition, two programs an SM); elsewhere the
        portable kernel: 128-key tiles, 8 warps, two stages, a head's query blocks
        side by side, bulk tile copies (TMA: 435 vs 387 TF/s at d 128). Head dim 64
        keeps the portable small-tile launch without TMA (the Gluon kernel covers it
        but is not yet measured there). Head dims above 128 take 64-key tiles:
        128-key ones need more shared memory than an SM has at d 256."""
        if head_dim > 128:
            return cls(64, 8, 2, tma=True)
        if head_dim > 64:
            return cls(128, 8, 2, tma=True, warp_specialized=HopperLaunch(4, 3))
        return cls(64, 4, 3)


def hopper_kernel_runs(
    device: torch.device,
    dtype: torch.dtype,
    kv_dtype: torch.dtype,
    head_dim: int,
    block_size: int,
    page_size: int | None,
) -> bool:
    """Whether the default launch computes batches of this shape (``dtype`` the
    queries', ``kv_dtype`` the keys' and values', ``page_size`` None for contiguous
    K/V) with the Hopper kernel, their K/V laid out for bulk copies (token-major pages,
    as vLLM's default NHD cache layout is): the attention's rate, on which the sparse
    path's break-even depends. :func:`hopper_kernel_takes` asks it of tensors."""
    return AttentionLaunch.default(
        head_dim
    ).warp_specialized is not None and hopper_common.covers(
        device, dtype, kv_dtype, head_dim, block_size, page_size,
        hopper_attention.BLOCK_SIZES,
    )  # fmt: skip


def hopper_kernel_takes(
    q: torch.Tensor,
    kv: KVSource,
    block_size: int,
    launch: AttentionLaunch | None = None,
) -> bool:
    """Whether ``launch`` (None: the default one) hands this batch to the Hopper
    kernel, the layout of ``kv`` included: the test :func:`block_sparse_attention`
    dispatches on."""
    launch = launch or AttentionLaunch.default(q.shape[-1])
    return launch.warp_specialized is not None and hopper_common.supports(
        q, kv, block_size, hopper_attention.BLOCK_SIZES
    )


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
    q_scale: torch.Tensor | None = None,
) -> None:
    """Write the attention of the plan's query rows into ``out`` (and ``lse``).

    ``q, out [total_q, Hq, D]`` (fp8 queries: ``q_scale`` is their float32 scale;
    ``out`` is 16-bit or float32); ``lse [total_q, Hq]`` float32 or None;
    ``kv_index [Hq, T, >= max_k_blocks]`` int32: for head ``h`` and global query block
    ``g``, the selected key blocks in increasing order, the diagonal block last;
    ``kv_count [Hq, T]`` int32: how many. Rows outside the plan are left untouched.
    """
    plan.check_batch(q, kv, out)
    Hq, D = q.shape[1], q.shape[2]
    B = plan.block_size
    if plan.num_q_blocks == 0:
        return
    launch = launch or AttentionLaunch.default(D)
    if hopper_kernel_takes(q, kv, B, launch):
        hopper_attention.hopper_sparse_attention(
            q, kv, plan, kv_index, kv_count, scale * math.log2(math.e), out, lse,
            launch.warp_specialized,
        )  # fmt: skip
        return
    block_n = min(launch.block_n, B)
    key, k_page, k_slot, k_head, table, table_stride, k_scale = kv.key_args()
    value, v_page, v_slot, v_head, v_scale = kv.value_args()
    page_size = kv.page_size
    use_tma = (
        launch.tma
        and has_bulk_copies(q.device)
        and triton.next_power_of_2(D) == D
        and (not kv.paged or page_size % block_n == 0)
        and all(bulk_copyable(t, kv.paged) for t in (kv.key, kv.value))
    )
    k_desc, v_desc = (
        (
            tile_descriptor(kv.key, kv.paged, block_n),
            tile_descriptor(kv.value, kv.paged, block_n),
        )
        if use_tma
        else (None, None)
    )
    grid = (Hq, plan.num_q_blocks) if launch.heads_fastest else (plan.num_q_blocks, Hq)
    _block_sparse_attention_kernel[grid](
        q, out, lse if lse is not None else out,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        lse.stride(0) if lse is not None else 0,
        key, value, k_page, k_slot, k_head, v_page, v_slot, v_head,
        table, table_stride, k_desc, v_desc,
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        plan.block_request, plan.block_row,
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        scale * math.log2(math.e), q_scale, k_scale, v_scale,
        Hq // kv.num_kv_heads, plan.num_q_blocks,
        PAGED=kv.paged, PAGE_SIZE=page_size, TMA=use_tma,
        HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), BLOCK_SIZE=B, BLOCK_N=block_n,
        WRITE_LSE=lse is not None,
        HEADS_FASTEST=launch.heads_fastest, HEAVY_FIRST=launch.heavy_first,
        DOT_PRECISION=dot_precision(q.dtype),
        FP8_PROBABILITIES=launch.fp8_probabilities and is_fp8(kv.value.dtype),
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )  # fmt: skip


@functools.cache
def has_bulk_copies(device: torch.device) -> bool:
    """Whether ``device`` has Hopper's tensor memory accelerator (sm_90 and later; the
    CPU's Triton interpreter emulates it). Older GPUs load every tile by pointers."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device)[0] >= 9


def tile_descriptor(cache: torch.Tensor, paged: bool, block_n: int) -> TensorDescriptor:
    """A 3-D bulk-copy descriptor ``[pages, tokens per page, Hkv * D]`` with
    ``[1, block_n, D]`` tiles (contiguous K/V: one page holding every token)."""
    view = page_view(cache, paged)
    return TensorDescriptor(
        view,
        shape=list(view.shape),
        strides=list(view.stride()),
        block_shape=[1, block_n, cache.shape[-1]],
    )
