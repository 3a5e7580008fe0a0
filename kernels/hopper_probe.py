"""The probe's log-sum-exp statistics for Hopper (sm_90), warp-specialised, in Gluon.

It computes what ``probe.py``'s ``_probe_row_stats_kernel`` computes: for each (query
head, request, split of ``SPLIT_BLOCKS`` key blocks), the running max and sum (base 2)
of every probe row (the request's last ``n = min(BLOCK, q_len)`` queries) over the
split's keys, into ``[R, Hq, splits, BLOCK]`` float32 buffers that
``probe._probe_lse_kernel`` combines. Laid out as the attention kernel
(``hopper_attention.py``) is:

- a **loader** warp brings the split's K tiles into a ring of shared-memory stages
  with bulk tensor copies (TMA), ``ready`` / ``empty`` mbarriers per stage;
- two **consumer** warp groups, 64 probe rows each, compute ``S = Q K^T`` with
  ``wgmma`` and fold it into their rows' running max and sum; as two partitions they
  release stages separately, so one's exponentials run while the other's product does.

Scope: what ``hopper_common.supports`` accepts (16-bit, head dim 64 or 128,
128-token blocks, contiguous K/V or pages of 16 tokens or more laid out for bulk
copies). Keys after a probe row, or past the sequence, are masked in the last one or
two tiles only.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma

from .hopper_common import (
    BLOCK,
    CONSUMER_REGISTERS,
    LOADER_REGISTERS,
    MAX_REGISTERS,
    copy_rows,
    load_tile,
    query_layout,
    stage_queries,
    tile_descriptor,
    wgmma_layout,
)
from .plan import KVSource, SparsePlan

STAGES = 3  # three 128 x 128 key tiles and the probe queries: 128 KB


@gluon.jit
def key_loader(
    k_desc, k_bufs, ready, empty, first_block, tiles, kv_len, k_start,
    table_row_ptr, kvh,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr,
    STAGES: gl.constexpr,
):  # fmt: skip
    """The loader partition: K of key blocks ``first_block .. first_block + tiles -
    1``, in order, into the stage ring."""
    tile_bytes: gl.constexpr = BLOCK * HEAD_DIM * k_desc.dtype.primitive_bitwidth // 8
    for j in range(tiles):
        s = j % STAGES
        # a fresh mbarrier counts as having completed phase 1: the first lap passes
        mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), tile_bytes)
        # fmt: off
        load_tile(k_desc, k_bufs.index(s), ready.index(s), first_block + j, kv_len,
                  k_start, table_row_ptr, kvh, HEAD_DIM, PAGED, PAGE_SIZE)
        # fmt: on


@gluon.jit
def whole_tiles(kv_len, n, first_block, tiles):
    """How many of a program's ``tiles`` key tiles from ``first_block`` on every probe
    row (the ``n`` queries ending at ``kv_len``) sees whole. The consumers take those
    first, in a loop without masks, and the rest (the last one or two) with them: a
    mask inside one loop would cost every tile its instructions."""
    seen_by_all = (kv_len - n + 1) // BLOCK  # blocks every probe row sees whole
    return gl.minimum(gl.maximum(seen_by_all - first_block, 0), tiles)


@gluon.jit
def _row_stats_tile(
    j, q_tile, k_bufs, ready, empty, zero_s, m_i, l_i,
    first_block, kv_len, pos, scale_log2,
    mma: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr,
):  # fmt: skip
    """Tile ``j`` of a consumer's walk: its product, then the running max and sum of
    its rows (``probe.running_max_and_sum``, in this layout); the causal and length
    masks only where ``MASKED``. Returns the new ``(m_i, l_i)``."""
    s_idx = j % STAGES
    mbarrier.wait(ready.index(s_idx), (j // STAGES) & 1)
    s = warpgroup_mma(
        q_tile, k_bufs.index(s_idx).permute((1, 0)), zero_s, use_acc=False
    )
    mbarrier.arrive(empty.index(s_idx))
    s = s * scale_log2
    if MASKED:
        keys = (first_block + j) * BLOCK + gl.arange(
            0, BLOCK, layout=gl.SliceLayout(0, mma)
        )
        visible = (gl.expand_dims(keys, 0) < kv_len) & (
            gl.expand_dims(keys, 0) <= gl.expand_dims(pos, 1)
        )
        s = gl.where(visible, s, gl.full_like(s, float("-inf")))
    m_new = gl.maximum(m_i, gl.max(s, axis=1))
    if MASKED:  # a row may see no key of the tile yet
        m_safe = gl.where(m_new == float("-inf"), gl.zeros_like(m_new), m_new)
    else:
        m_safe = m_new
    l_i = l_i * gl.exp2(m_i - m_safe) + gl.sum(
        gl.exp2(s - gl.expand_dims(m_safe, 1)), axis=1
    )
    return m_new, l_i


@gluon.jit
def _row_stats_consumer(
    q_smem, k_bufs, ready, empty, max_row, sum_row,
    first_block, tiles, kv_len, n, scale_log2,
    STAGES: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr,
    WARPS: gl.constexpr,
):  # fmt: skip
    """A consumer partition (probe rows ``ROW0 .. ROW0 + ROWS - 1``): the running max
    and sum of its rows over the staged tiles, stored at ``max_row`` / ``sum_row``
    (pointers to the split's ``[BLOCK]`` rows)."""
    mma: gl.constexpr = wgmma_layout(BLOCK, WARPS)
    rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
    q_tile = q_smem.slice(ROW0, ROWS)
    y = ROW0 + gl.arange(0, ROWS, layout=rows_layout)
    pos = kv_len - n + y  # the probe rows' positions
    zero_s = gl.zeros([ROWS, BLOCK], gl.float32, layout=mma)
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=rows_layout)
    l_i = gl.zeros([ROWS], gl.float32, layout=rows_layout)
    whole = whole_tiles(kv_len, n, first_block, tiles)
    # fmt: off
    for j in range(whole):
        m_i, l_i = _row_stats_tile(j, q_tile, k_bufs, ready, empty, zero_s, m_i, l_i,
                                   first_block, kv_len, pos, scale_log2, mma, STAGES,
                                   False)
    for j in range(whole, tiles):
        m_i, l_i = _row_stats_tile(j, q_tile, k_bufs, ready, empty, zero_s, m_i, l_i,
                                   first_block, kv_len, pos, scale_log2, mma, STAGES,
                                   True)
    # fmt: on
    gl.store(max_row + y, m_i)
    gl.store(sum_row + y, l_i)


@gluon.jit(do_not_specialize=["stride_table"])
def _hopper_probe_row_stats_kernel(
    q_ptr, stride_qt, stride_qh, k_desc, table_ptr, stride_table,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    max_ptr, sum_ptr, stride_m_r, stride_m_h, stride_m_s,  # [R, Hq, splits, BLOCK]
    scale_log2, group,
    PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
    SPLIT_BLOCKS: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = BLOCK // 2  # two consumer partitions of one warp group
    h = gl.program_id(0)
    req = gl.program_id(1)
    split = gl.program_id(2)
    kv_len = gl.load(req_kv_len + req)
    q_len = gl.load(req_q_len + req)
    n = gl.minimum(q_len, BLOCK)
    first_block = split * SPLIT_BLOCKS
    tiles = gl.maximum(
        gl.minimum(SPLIT_BLOCKS, (kv_len + BLOCK - 1) // BLOCK - first_block), 0
    )
    k_start = gl.load(req_k_start + req)
    table_row_ptr = table_ptr + gl.load(req_table_row + req).to(gl.int64) * stride_table
    row = req * stride_m_r + h * stride_m_h + split * stride_m_s

    dtype: gl.constexpr = k_desc.dtype
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for(
        [BLOCK, HEAD_DIM], dtype
    )
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK, HEAD_DIM], tile_layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], tile_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one per consumer

    # the probe queries (rows past n as zeros) into shared memory
    q_layout: gl.constexpr = query_layout(HEAD_DIM, num_warps)
    y = gl.arange(0, BLOCK, layout=gl.SliceLayout(1, q_layout))
    rows = (gl.load(req_q_start + req) + q_len - n + y).to(gl.int64)
    stage_queries(q_smem, q_ptr + h * stride_qh, rows, y < n, stride_qt, q_layout)

    # fmt: off
    gl.warp_specialize(
        [
            (_row_stats_consumer, (
                q_smem, k_bufs, ready, empty, max_ptr + row, sum_ptr + row,
                first_block, tiles, kv_len, n, scale_log2, STAGES, 0, ROWS, num_warps)),
            (_row_stats_consumer, (
                q_smem, k_bufs, ready, empty, max_ptr + row, sum_ptr + row,
                first_block, tiles, kv_len, n, scale_log2, STAGES, ROWS, ROWS,
                num_warps)),
            (key_loader, (
                k_desc, k_bufs, ready, empty, first_block, tiles, kv_len, k_start,
                table_row_ptr, h // group, HEAD_DIM, PAGED, PAGE_SIZE, STAGES)),
        ],
        [num_warps, 1],
        [CONSUMER_REGISTERS, LOADER_REGISTERS],
    )
    # fmt: on


def hopper_probe_row_stats(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, scale_log2: float,
    row_max: torch.Tensor, row_sum: torch.Tensor, split_blocks: int,
) -> None:  # fmt: skip
    """Fill ``row_max`` / ``row_sum`` ``[R, Hq, splits, BLOCK]`` float32 (arguments as
    ``probe.probe`` has them; ``hopper_common.supports(q, kv, BLOCK)`` must hold)."""
    Hq, D = q.shape[1], q.shape[2]
    table, table_stride = kv.table_args()
    _hopper_probe_row_stats_kernel[(Hq, plan.num_requests, row_max.shape[2])](
        q, q.stride(0), q.stride(1), tile_descriptor(kv.key, kv.paged, copy_rows(kv)),
        table, table_stride,
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        row_max, row_sum, *row_max.stride()[:3],
        scale_log2, Hq // kv.num_kv_heads,
        PAGED=kv.paged, PAGE_SIZE=kv.page_size, HEAD_DIM=D,
        SPLIT_BLOCKS=split_blocks, STAGES=STAGES, num_warps=4, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
