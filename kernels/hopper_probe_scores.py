"""The probe's scores pass for Hopper (sm_90), warp-specialised, in Gluon.

It computes what ``probe.py``'s ``_probe_scores_kernel`` computes, into the same
buffers: for each (query head, request) and key block ``c`` of the program's
``BLOCKS_PER_PROGRAM``, the probabilities ``P [n, BLOCK]`` of the probe rows (the
request's last ``n = min(BLOCK, q_len)`` queries) given their log-sum-exp, reduced to
per-key column sums (``vertical_tokens``, ``vertical_blocks``), per-distance diagonal
sums (``slash_tokens``) and the masses of the (at most two) query blocks the rows fall
in (``slash_blocks``). Laid out as ``hopper_probe.py``:

- a **loader** warp brings the program's K tiles into a ring of shared-memory stages
  with bulk tensor copies (TMA);
- two **consumer** warp groups take alternate tiles, all 128 probe rows each, as two
  64-row halves: ``S = Q K^T`` on ``wgmma``, the exponentials in registers.

The diagonal sums skew through shared memory. The probe rows are staged in reverse
order (row ``y' = 127 - y``), so a diagonal ``y - x = m`` of the tile is the
anti-diagonal ``y' + x = 127 - m``. Each half stores its ``[64, 128]`` probabilities
key-major with one element of padding every 64 (``address = x * 65 + y''``, ``y''``
the row in the half), and reads the same bytes back as rows of 64: the element lands
in column ``(y'' + x) % 64`` of row ``x + (y'' + x) // 64``, so each column of that
view holds three anti-diagonals (``t = 0, 1, 2``), told apart by ``row - column``;
column sums give them with no shuffles. A half's anti-diagonals are offset by 64
rows' worth (``y' = 64 * half + y''``), which is a whole period of the view, so both
halves add into the same four groups of 64 anti-diagonals. Within a half the rows are
staged in a permuted order (:func:`_skew_row`) that makes the store free of bank
conflicts.

The same stored bytes, read key by key (a thread a key), give the column sums. Nothing
is reduced across warps in registers: the column sums and the groups' partial sums stay
in their threads, and the groups' two row parities and each warp's share of the block
masses meet through shared memory under the barriers the skew takes anyway (four a
tile), in a fixed order.

Each tile adds its diagonals below and above its main one to ``slash_tokens`` with one
atomic add each; a diagonal crosses two adjacent key blocks, so every entry gets
exactly two adds on a zeroed buffer, which is deterministic, as in the portable kernel.
The block masses get two adds per entry likewise; the column sums are plain stores, and
a tile's ``vertical_blocks`` entry is the sum of its two query blocks' masses.

Scope: what ``hopper_common.supports`` accepts. Keys after a probe row, or past the
sequence, are masked in the last one or two tiles only.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from vllm_flexprefill.blocks import cdiv

from .hopper_common import (
    BLOCK,
    CONSUMER_REGISTERS,
    LOADER_REGISTERS,
    MAX_REGISTERS,
    copy_rows,
    query_layout,
    stage_queries,
    tile_descriptor,
    wgmma_layout,
)
from .hopper_probe import key_loader, whole_tiles
from .plan import KVSource, SparsePlan

STAGES = 3  # three key tiles, the probe queries and two skew buffers: 194 KB
BLOCKS_PER_PROGRAM = 16  # key blocks a program scores (alternate ones per consumer)
HALF = gl.constexpr(64)  # probe rows of one wgmma
# The skew buffer's read view: 130 rows of 64 floats (8320 = 128 keys x 65).
VIEW_COLUMNS = gl.constexpr(64)
VIEW_ROWS = gl.constexpr(130)
# A half's probabilities [64 rows, 128 keys] key-major, one float of padding every 64:
# offset bits 0-5 are the staged row's y'' bits (see _skew_row), bits 6-12 the key's.
SKEW_STORE_LAYOUT = gl.constexpr(
    gl.PaddedSharedLayout(
        [[64, 1]],
        [[4, 0], [8, 0], [16, 0], [1, 0], [2, 0], [32, 0]]
        + [[0, 1 << i] for i in range(7)],
        [],
        [64, 128],
    )
)
# The read view [64 (k), 2 (p), 64 (column)], row r = 2 k + p, in registers: a thread
# holds one column's 64 rows of one parity (a load's 32 lanes: 32 columns of a row).
GROUPS_READ_LAYOUT = gl.constexpr(
    gl.BlockedLayout([1, 1, 1], [1, 1, 32], [1, 2, 2], [2, 1, 0])
)
# The groups' two parities meet through shared memory, then in one thread:
# [2 parities, 64 columns, 2, 2 (the four groups)].
PARITIES_LAYOUT = gl.constexpr(
    gl.BlockedLayout([2, 1, 2, 2], [1, 32, 1, 1], [1, 4, 1, 1], [3, 2, 1, 0])
)
# A half's probabilities read back key by key: a thread holds one key's 64 rows.
COLUMNS_READ_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 1], [1, 32], [1, 4], [1, 0]))


@gluon.jit
def _skew_row(rho):
    """The row of the half, ``y''``, staged at accumulator row ``rho`` (both in [0,
    64)): a bit permutation that sends the eight rows one store instruction of a warp
    writes (``rho`` bits 0-2) to ``y''`` bits 3, 4 and 0, so that with the key pairs
    of the wgmma layout they hit 32 different banks."""
    return ((rho & 1) << 3) | ((rho & 2) << 3) | ((rho >> 2) & 7) | (rho & 32)


@gluon.jit
def _diagonal_groups(view, extra, salt):
    """Sums of one half's anti-diagonals, read from its skewed probabilities:
    ``view`` ``[64, 2, 64]`` (rows ``r = 2 k + p`` of 64 columns, rows 0-127) and
    ``extra`` ``[2, 64]`` (rows 128-129). Returns the three groups ``t`` (the
    anti-diagonal ``64 t + column``) as ``[2, 64]`` partial sums (``p`` not yet
    added). ``salt`` is 0, from a loop variable: it keeps the group masks inside the
    caller's loop (a compare each) rather than hoisted out of it, where 192 of them
    would spill."""
    L3: gl.constexpr = GROUPS_READ_LAYOUT
    v = view.load(L3)
    k = gl.arange(0, 64, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3)))
    p = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3)))
    j = (
        gl.arange(0, VIEW_COLUMNS, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3)))
        + salt
    )
    k3 = gl.expand_dims(gl.expand_dims(k, 1), 2)
    p3 = gl.expand_dims(gl.expand_dims(p, 0), 2)
    j3 = gl.expand_dims(gl.expand_dims(j, 0), 1)
    d = 2 * k3 + p3 - j3  # row - column: the group (and padding at 1 and 66)
    zero = gl.zeros_like(v)
    t0 = gl.sum(gl.where(d <= 0, v, zero), axis=0)
    t1 = gl.sum(gl.where((d >= 2) & (d <= 65), v, zero), axis=0)
    t2 = gl.sum(gl.where(d >= 67, v, zero), axis=0)
    E: gl.constexpr = gl.SliceLayout(0, L3)
    e = extra.load(E)
    row = 128 + gl.arange(0, 2, layout=gl.SliceLayout(1, E))
    col = gl.arange(0, VIEW_COLUMNS, layout=gl.SliceLayout(0, E))
    d = gl.expand_dims(row, 1) - gl.expand_dims(col, 0)
    t1 += gl.where(d == 65, e, gl.zeros_like(e))
    t2 += gl.where(d >= 67, e, gl.zeros_like(e))
    return t0, t1, t2


@gluon.jit
def _skewed_sums(p, store_view, read_view, extra_view, salt):
    """Store a half's probabilities ``p [64, BLOCK]`` skewed and read them back: its
    three anti-diagonal groups (:func:`_diagonal_groups`) and its column sums
    (``[BLOCK]``, a thread a key). The caller's next barrier frees the buffer."""
    store_view.store(p)
    gl.thread_barrier()
    t0, t1, t2 = _diagonal_groups(read_view, extra_view, salt)
    columns = gl.sum(store_view.load(COLUMNS_READ_LAYOUT), axis=0)
    return t0, t1, t2, columns


@gluon.jit
def _probabilities(s, scale_log2, shift, pos, keys, kv_len, masked):
    """A half's probabilities from its scores ``s [64, BLOCK]`` (accumulator layout):
    ``exp2(s * scale_log2 - shift)`` per row; where ``masked``, keys past a row's
    position or the sequence get 0."""
    p = gl.exp2(s * scale_log2 - gl.expand_dims(shift, 1))
    if masked:
        k2 = gl.expand_dims(keys, 0)
        visible = (k2 < kv_len) & (k2 <= gl.expand_dims(pos, 1))
        p = gl.where(visible, p, gl.zeros_like(p))
    return p


@gluon.jit
def _warp_masses(p, in_last, WARPS: gl.constexpr):
    """Each warp's mass of the probabilities ``p [64, BLOCK]`` (accumulator layout, 16
    rows a warp) in rows ``in_last`` and in the others, as ``[WARPS]`` tensors: the
    row sums and the per-warp sums stay within each warp."""
    row_mass = gl.sum(p, axis=1)
    last = gl.where(in_last, row_mass, gl.zeros_like(row_mass))
    shape: gl.constexpr = [WARPS, HALF // WARPS]
    last = gl.sum(gl.reshape(last, shape), axis=1)
    prev = gl.sum(gl.reshape(row_mass, shape), axis=1) - last
    return last, prev


@gluon.jit
def _add_diagonals(stok_ptr, sums, first, kv_len):
    """Add 64 diagonals' sums at the distances ``first, first - 1, ...`` (those
    outside ``[0, kv_len)`` dropped)."""
    distance = first - gl.arange(0, VIEW_COLUMNS, layout=sums.type.layout)
    ok = (distance >= 0) & (distance < kv_len)
    gl.atomic_add(stok_ptr + distance, sums, mask=ok, sem="relaxed")


@gluon.jit
def _scores_tile(
    jt, q_smem, k_bufs, ready, empty, zero_s, x, scale_log2, shift0, shift1, pos0, pos1,
    in_last0, in_last1, store_view, read_view, extra_view, group_view, last_share,
    prev_share, first_block, kv_len, n, last_row_block, vtok_ptr, stok_ptr,
    vblk_ptr, sblk_ptr, shares_layout: gl.constexpr, STAGES: gl.constexpr,
    WARPS: gl.constexpr, MASKED: gl.constexpr,
):  # fmt: skip
    """Tile ``jt`` of a consumer's walk (both halves of the probe rows) reduced into
    the outputs; the causal and length masks only where ``MASKED``."""
    s_idx = jt % STAGES
    mbarrier.wait(ready.index(s_idx), (jt // STAGES) & 1)
    k_tile = k_bufs.index(s_idx).permute((1, 0))
    c = first_block + jt
    keys = c * BLOCK + x
    # the first half of the rows, while the second half's product runs
    s = warpgroup_mma(q_smem.slice(0, HALF), k_tile, zero_s, use_acc=False)
    s1_tok = warpgroup_mma(
        q_smem.slice(HALF, HALF), k_tile, zero_s, use_acc=False, is_async=True
    )
    p = _probabilities(s, scale_log2, shift0, pos0, keys, kv_len, MASKED)
    last_rows, prev_rows = _warp_masses(p, in_last0, WARPS)
    a0, a1, a2, column_mass = _skewed_sums(
        p, store_view, read_view, extra_view, c >> 30
    )
    gl.thread_barrier()
    s = warpgroup_mma_wait(0, deps=[s1_tok])
    mbarrier.arrive(empty.index(s_idx))
    p = _probabilities(s, scale_log2, shift1, pos1, keys, kv_len, MASKED)
    last_half, prev_half = _warp_masses(p, in_last1, WARPS)
    last_share.store(last_rows + last_half)
    prev_share.store(prev_rows + prev_half)
    b0, b1, b2, half_mass = _skewed_sums(p, store_view, read_view, extra_view, c >> 30)
    column_mass += half_mass
    mass_last = gl.sum(last_share.load(shares_layout), axis=0)
    mass_prev = gl.sum(prev_share.load(shares_layout), axis=0)
    # one store ([2, 64, g % 2, g // 2]): separate ones would each take a barrier
    group_view.store(gl.join(gl.join(a0, a1 + b0), gl.join(a2 + b1, b2)))
    gl.thread_barrier()

    column_keys = c * BLOCK + gl.arange(
        0, BLOCK, layout=gl.SliceLayout(0, COLUMNS_READ_LAYOUT)
    )
    gl.store(vtok_ptr + column_keys, column_mass, mask=column_keys < kv_len)
    # every probe row lies in the last query block or the one before it
    gl.store(vblk_ptr + c, mass_last + mass_prev)
    # the anti-diagonals 64 g + j, g = 0..3, of both halves; anti-diagonal
    # y' + x = 127 - (y - x), at its distance from row 0's position
    to_distance = kv_len - n - c * BLOCK + (BLOCK - 1)
    groups = gl.sum(group_view.load(PARITIES_LAYOUT), axis=0)
    g01, g23 = gl.split(groups)
    g0, g1 = gl.split(g01)
    g2, g3 = gl.split(g23)
    _add_diagonals(stok_ptr, g0, to_distance, kv_len)
    _add_diagonals(stok_ptr, g1, to_distance - 64, kv_len)
    _add_diagonals(stok_ptr, g2, to_distance - 128, kv_len)
    # the last group's last anti-diagonal, 255, holds nothing
    _add_diagonals(stok_ptr, g3, to_distance - 192, kv_len)
    gl.atomic_add(sblk_ptr + last_row_block - c, mass_last, sem="relaxed")
    gl.atomic_add(
        sblk_ptr + last_row_block - 1 - c,
        mass_prev,
        mask=last_row_block - 1 - c >= 0,
        sem="relaxed",
    )


@gluon.jit
def _scores_consumer(
    q_smem, k_bufs, ready, empty, skew_bufs, group_bufs, last_shares, prev_shares,
    first_block, tiles, kv_len, n, scale_log2, lse_row,
    vtok_ptr, stok_ptr, vblk_ptr, sblk_ptr,
    STAGES: gl.constexpr, PARITY: gl.constexpr, WARPS: gl.constexpr,
):  # fmt: skip
    """A consumer partition: the program's tiles ``PARITY, PARITY + 2, ...``, all
    probe rows, reduced into the outputs (pointers already at the head and
    request)."""
    mma: gl.constexpr = wgmma_layout(BLOCK, WARPS)
    rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
    keys_layout: gl.constexpr = gl.SliceLayout(0, mma)
    base: gl.constexpr = VIEW_ROWS * PARITY  # this consumer's rows of skew_bufs
    store_view = skew_bufs.index(base)._reinterpret(
        gl.float32, [HALF, BLOCK], SKEW_STORE_LAYOUT
    )
    read_view = skew_bufs.index(base)._reinterpret(
        gl.float32, [64, 2, VIEW_COLUMNS], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0])
    )
    extra_view = skew_bufs.index(base + 128)._reinterpret(
        gl.float32, [2, VIEW_COLUMNS], gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    )
    # the four groups' partial sums [2 parities, 64, 2, 2], summed after the next
    # barrier
    group_view = group_bufs.index(8 * PARITY)._reinterpret(
        gl.float32,
        [2, VIEW_COLUMNS, 2, 2],
        gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0]),
    )

    # per half: the probe rows (y = 127 - y'), their shift and which query block
    rho = gl.arange(0, HALF, layout=rows_layout)
    y0 = BLOCK - 1 - _skew_row(rho)
    y1 = y0 - HALF
    log2_n = gl.log2(n.to(gl.float32))
    shift0 = gl.load(lse_row + y0, mask=y0 < n, other=float("inf")) + log2_n
    shift1 = gl.load(lse_row + y1, mask=y1 < n, other=float("inf")) + log2_n
    pos0 = kv_len - n + y0
    pos1 = kv_len - n + y1
    last_row_block = (kv_len - 1) // BLOCK
    in_last0 = (pos0 // BLOCK) == last_row_block
    in_last1 = (pos1 // BLOCK) == last_row_block
    zero_s = gl.zeros([HALF, BLOCK], gl.float32, layout=mma)
    x = gl.arange(0, BLOCK, layout=keys_layout)

    # each warp's share of the tile's two query-block masses, exchanged through
    # shared memory (a fixed order: deterministic)
    # (two allocations: stores to one would each take a barrier)
    last_share = last_shares.index(PARITY)
    prev_share = prev_shares.index(PARITY)
    shares_layout: gl.constexpr = gl.BlockedLayout([WARPS], [32], [WARPS], [0])

    whole = whole_tiles(kv_len, n, first_block, tiles)
    # fmt: off
    for jt in range(PARITY, whole, 2):
        _scores_tile(
            jt, q_smem, k_bufs, ready, empty, zero_s, x, scale_log2, shift0, shift1,
            pos0, pos1, in_last0, in_last1, store_view, read_view, extra_view,
            group_view, last_share, prev_share, first_block, kv_len, n, last_row_block,
            vtok_ptr, stok_ptr, vblk_ptr, sblk_ptr, shares_layout, STAGES, WARPS, False)
    for jt in range(whole + (whole + PARITY) % 2, tiles, 2):
        _scores_tile(
            jt, q_smem, k_bufs, ready, empty, zero_s, x, scale_log2, shift0, shift1,
            pos0, pos1, in_last0, in_last1, store_view, read_view, extra_view,
            group_view, last_share, prev_share, first_block, kv_len, n, last_row_block,
            vtok_ptr, stok_ptr, vblk_ptr, sblk_ptr, shares_layout, STAGES, WARPS, True)
    # fmt: on


@gluon.jit(
    do_not_specialize=["stride_table", "stride_tok_h", "stride_blk_r", "stride_blk_h"],
    do_not_specialize_on_alignment=["stok_ptr", "sblk_ptr"],
)
def _hopper_probe_scores_kernel(
    q_ptr, stride_qt, stride_qh, k_desc, table_ptr, stride_table,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row, req_kv_offset,
    lse_ptr, stride_lse_r, stride_lse_h,  # [R, Hq, BLOCK], base 2
    vtok_ptr, stok_ptr, stride_tok_h,  # [Hq, total_kv_len] each, ragged
    vblk_ptr, sblk_ptr, stride_blk_r, stride_blk_h,  # [R, Hq, max_k_blocks]
    scale_log2, group,
    PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
    BLOCKS_PER_PROGRAM: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    h = gl.program_id(0)
    req = gl.program_id(1)
    first_block = gl.program_id(2) * BLOCKS_PER_PROGRAM
    kv_len = gl.load(req_kv_len + req)
    if first_block * BLOCK >= kv_len:
        return
    q_len = gl.load(req_q_len + req)
    n = gl.minimum(q_len, BLOCK)
    tiles = gl.minimum(BLOCKS_PER_PROGRAM, (kv_len + BLOCK - 1) // BLOCK - first_block)
    k_start = gl.load(req_k_start + req)
    table_row_ptr = table_ptr + gl.load(req_table_row + req).to(gl.int64) * stride_table
    tok = h.to(gl.int64) * stride_tok_h + gl.load(req_kv_offset + req)
    blk = req.to(gl.int64) * stride_blk_r + h * stride_blk_h
    lse_row = lse_ptr + req * stride_lse_r + h * stride_lse_h

    dtype: gl.constexpr = k_desc.dtype
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for(
        [BLOCK, HEAD_DIM], dtype
    )
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK, HEAD_DIM], tile_layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], tile_layout)
    # a skew buffer per consumer, as rows of 64 floats
    skew_bufs = gl.allocate_shared_memory(
        gl.float32,
        [2 * VIEW_ROWS, VIEW_COLUMNS],
        gl.SwizzledSharedLayout(1, 1, 1, [0]),
    )
    # per consumer, its tile's diagonal groups' partial sums [4, 2 parities, 64]
    group_bufs = gl.allocate_shared_memory(
        gl.float32, [16, VIEW_COLUMNS], gl.SwizzledSharedLayout(1, 1, 1, [0])
    )
    # per consumer, each warp's share of the two query-block masses
    last_shares = gl.allocate_shared_memory(
        gl.float32, [2, num_warps], gl.SwizzledSharedLayout(1, 1, 1, [0])
    )
    prev_shares = gl.allocate_shared_memory(
        gl.float32, [2, num_warps], gl.SwizzledSharedLayout(1, 1, 1, [0])
    )
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)  # a tile has one consumer

    # the probe queries into shared memory, reversed (row y' holds probe row
    # 127 - y') and, within each half, permuted by _skew_row; rows past n zero
    q_layout: gl.constexpr = query_layout(HEAD_DIM, num_warps)
    staged = gl.arange(0, BLOCK, layout=gl.SliceLayout(1, q_layout))
    y = BLOCK - 1 - ((staged & HALF) + _skew_row(staged & (HALF - 1)))
    rows = (gl.load(req_q_start + req) + q_len - n + y).to(gl.int64)
    stage_queries(q_smem, q_ptr + h * stride_qh, rows, y < n, stride_qt, q_layout)

    # fmt: off
    gl.warp_specialize(
        [
            (_scores_consumer, (
                q_smem, k_bufs, ready, empty, skew_bufs, group_bufs, last_shares,
                prev_shares,
                first_block, tiles, kv_len, n, scale_log2, lse_row,
                vtok_ptr + tok, stok_ptr + tok, vblk_ptr + blk, sblk_ptr + blk,
                STAGES, 0, num_warps)),
            (_scores_consumer, (
                q_smem, k_bufs, ready, empty, skew_bufs, group_bufs, last_shares,
                prev_shares,
                first_block, tiles, kv_len, n, scale_log2, lse_row,
                vtok_ptr + tok, stok_ptr + tok, vblk_ptr + blk, sblk_ptr + blk,
                STAGES, 1, num_warps)),
            (key_loader, (
                k_desc, k_bufs, ready, empty, first_block, tiles, kv_len, k_start,
                table_row_ptr, h // group, HEAD_DIM, PAGED, PAGE_SIZE, STAGES)),
        ],
        [num_warps, 1],
        [CONSUMER_REGISTERS, LOADER_REGISTERS],
    )
    # fmt: on


def hopper_probe_scores(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, scale_log2: float,
    lse: torch.Tensor, tokens: torch.Tensor, blocks: torch.Tensor,
    blocks_per_program: int,
) -> None:  # fmt: skip
    """Add the probe's scores into ``tokens [2, Hq, total_kv_len]`` and ``blocks [2,
    R, Hq, max_k_blocks]`` (zeroed, float32) from the rows' log-sum-exp ``lse [R, Hq,
    BLOCK]`` (base 2); arguments otherwise as ``probe.probe`` has them,
    ``hopper_common.supports(q, kv, BLOCK)`` must hold."""
    Hq, D = q.shape[1], q.shape[2]
    table, table_stride = kv.table_args()
    grid = (Hq, plan.num_requests, cdiv(plan.max_k_blocks, blocks_per_program))
    _hopper_probe_scores_kernel[grid](
        q, q.stride(0), q.stride(1), tile_descriptor(kv.key, kv.paged, copy_rows(kv)),
        table, table_stride,
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        plan.kv_offset,
        lse, lse.stride(0), lse.stride(1),
        tokens[0], tokens[1], tokens.stride(1),
        blocks[0], blocks[1], blocks.stride(1), blocks.stride(2),
        scale_log2, Hq // kv.num_kv_heads,
        PAGED=kv.paged, PAGE_SIZE=kv.page_size, HEAD_DIM=D,
        BLOCKS_PER_PROGRAM=blocks_per_program, STAGES=STAGES, num_warps=4,
        maxnreg=MAX_REGISTERS,
    )  # fmt: skip
