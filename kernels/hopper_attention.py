"""Block-sparse causal attention for Hopper (sm_90), warp-specialised, in Gluon.

It computes exactly what ``sparse_attention.py``'s portable kernel computes (same plan,
same per-(head, query block) index with the diagonal block last, same outputs), laid
out as FlashAttention-3 lays out its forward pass:

- a **loader** warp walks the index and brings each selected key block's K and V
  tiles into a ring of shared-memory stages with bulk tensor copies (TMA), one
  ``ready`` mbarrier per stage (the copies' bytes arrive on it) and one ``empty``
  mbarrier the consumers arrive on when they are done with the stage;
- two **consumer** warp groups, 64 query rows each, run the online softmax over the
  128 x 128 tiles (64-token blocks: one consumer, 64 x 64 tiles, see below) with
  asynchronous ``wgmma``: the query-key product of tile ``j`` is
  issued together with the probability-value product of tile ``j - 1``, as FA3's
  intra-warp-group overlap orders them (in the sm_90 machine code ptxas moves the
  wait for the second product above the softmax of ``j``; keeping it below costs
  ~3.5% more cycles a tile: ``benchmarks/NOTES.md``, runs 33-34). Launched
  with 8 warps they are one partition that steps through the tiles together; with 4
  warps (the default, :class:`HopperLaunch`), two partitions that release each stage
  separately, so one's softmax can run while the other's products do, optionally
  taking turns to issue them (FA3's ping-pong).

Each consumer stages its own query rows in shared memory while the loader brings the
first key and value tiles; they stay there for the whole walk. S and the output
accumulate in float32 registers; the probabilities feed the second product from
registers.

At 64-token blocks (``block_size: 64``, finer selections) a program is one query
block of 64 rows: one consumer warp group on 64 x 64 tiles, and two programs share an
SM (a program's shared memory, the queries and three K/V stages, is 112 KB, and its
eight warps, the loader's padded to a group, get 128 registers a thread at launch, of
which the consumer takes 232 when the loader gives back all but 24), so one
program's softmax runs while the other's products do.

Scope: 16-bit queries, keys and values, head dim 64 or 128 (the default launch
takes it for 128 only: 64 is tested on the CPU's sm_90 compiler, not yet measured),
64- or 128-token blocks (key tiles the same), contiguous K/V or vLLM's paged cache with
pages of 16 tokens or more (a tile is one copy per page, or lies inside one). The
diagonal block, listed last, is the second tile the loader brings and the consumers
take (after the first listed block, the sink, which every program of a head reads
first), peeled off the loop (an if-converted mask would cost every tile ~180 more
instructions): the causal and length masks apply there, and in the paged cache the
rows past the sequence (a page's stale tail, which may hold anything, even NaN) are
zeroed in V before the product. Everything else runs the portable kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .hopper_common import (
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

BLOCK_SIZES = (64, 128)  # the blocks (= key tiles) this kernel runs

# 64-token blocks (two programs an SM): 8 warps x 32 x 128 registers a program at
# launch; the loader gives back 104 a thread of its group, which lifts the consumer to
# 232 (the 64 x 64 tiles need fewer than 128-token blocks' 240)
PAIR_MAX_REGISTERS = 128


@gluon.jit
def _kv_loader(
    k_desc, v_desc, k_bufs, v_bufs, ready, empty,
    index_row, count, kv_len, k_start, table_row_ptr, kvh,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr,
    STAGES: gl.constexpr,
):  # fmt: skip
    """The loader partition: K and V of every listed key block into the stage ring
    (``k_bufs, v_bufs [STAGES, BLOCK, HEAD_DIM]``), the first, then the diagonal
    (listed last), then the rest in order (a stage is reused once the consumers arrive
    on its ``empty``)."""
    BLOCK: gl.constexpr = k_bufs.shape[1]
    tile_bytes: gl.constexpr = (
        2 * BLOCK * HEAD_DIM * k_desc.dtype.primitive_bitwidth // 8
    )
    for j in range(count):
        s = j % STAGES
        # a fresh mbarrier counts as having completed phase 1: the first lap passes
        mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)
        c = gl.load(index_row + gl.where(j == 1, count - 1, gl.maximum(j - 1, 0)))
        bar = ready.index(s)
        mbarrier.expect(bar, tile_bytes)
        # fmt: off
        load_tile(k_desc, k_bufs.index(s), bar, c, kv_len, k_start, table_row_ptr,
                   kvh, HEAD_DIM, PAGED, PAGE_SIZE)
        load_tile(v_desc, v_bufs.index(s), bar, c, kv_len, k_start, table_row_ptr,
                   kvh, HEAD_DIM, PAGED, PAGE_SIZE)
        # fmt: on


@gluon.jit
def _zero_rows_past(
    v_buf, first_token, kv_len, HEAD_DIM: gl.constexpr, WARPS: gl.constexpr
):
    """Zero the rows of a staged V tile ``[BLOCK, HEAD_DIM]`` whose tokens lie at or
    past ``kv_len`` (a page's stale tail: a zero probability times NaN would still be
    NaN)."""
    layout: gl.constexpr = query_layout(HEAD_DIM, WARPS)
    rows = first_token + gl.arange(0, v_buf.shape[0], layout=gl.SliceLayout(1, layout))
    v = v_buf.load(layout)
    v_buf.store(gl.where(gl.expand_dims(rows < kv_len, 1), v, gl.zeros_like(v)))
    fence_async_shared()  # generic-proxy writes before the tensor cores read them
    gl.thread_barrier()


@gluon.jit
def _diagonal_values(
    v_buf, diag_ready, first_token, kv_len,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, WARPS: gl.constexpr,
    ROW0: gl.constexpr, SPLIT: gl.constexpr,
):  # fmt: skip
    """Make the diagonal tile's V safe to multiply: in the paged cache, rows past the
    sequence are zeroed by the consumer of the first rows; with split consumers the
    other one waits on ``diag_ready`` for it. Contiguous rows past a sequence are its
    neighbour's keys or the copy's zero fill: nothing to do."""
    if PAGED:
        if ROW0 == 0:
            _zero_rows_past(v_buf, first_token, kv_len, HEAD_DIM, WARPS)
            if SPLIT:
                mbarrier.arrive(diag_ready)
        else:
            mbarrier.wait(diag_ready, 0)


@gluon.jit
def _masked(s, first_token, kv_len, q_pos, cols_layout: gl.constexpr):
    """S ``[ROWS, BLOCK]`` with the keys past the sequence or after the query set to
    -inf."""
    tokens = first_token + gl.arange(0, s.shape[1], layout=cols_layout)
    visible = (gl.expand_dims(tokens, 0) < kv_len) & (
        gl.expand_dims(tokens, 0) <= gl.expand_dims(q_pos, 1)
    )
    return gl.where(visible, s, gl.full_like(s, float("-inf")))


@gluon.jit
def _quad_sums(p, ROWS: gl.constexpr):
    """``[ROWS, 4]``: each row's sum of the entries of ``p [ROWS, BLOCK]`` that each
    lane of the row's quad holds (no shuffles; the quad's four are added once, at the
    end: :func:`_row_sums`)."""
    parts = gl.reshape(p, [ROWS, p.shape[1] // 8, 4, 2])
    return gl.sum(gl.sum(parts, axis=3), axis=1)


@gluon.jit
def _row_sums(quad_sums, layout: gl.constexpr):
    """``[ROWS]`` in ``layout``: the row sums :func:`_quad_sums` left per lane."""
    return gl.convert_layout(gl.sum(quad_sums, axis=1), layout)


@gluon.jit
def _next_tile(
    j, q_tile, k_bufs, v_bufs, ready, empty, diag_ready, turns, zero_s, acc, p_op,
    m_i, l_i, diagonal, kv_len, q_pos, scale_log2,
    cols_layout: gl.constexpr, out_mma: gl.constexpr, p_operand: gl.constexpr,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, STAGES: gl.constexpr,
    ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr, SPLIT: gl.constexpr,
    PING_PONG: gl.constexpr, FIRST: gl.constexpr, DIAGONAL: gl.constexpr,
):  # fmt: skip
    """Tile ``j`` (>= 1) of a consumer's walk: its query-key product issued with the
    previous tile's P V, then its online-softmax step; the causal and length masks only
    where ``DIAGONAL`` (the second tile), so the other tiles carry no mask instructions.
    Returns the new ``(m_i, l_i, acc, p_op)``."""
    s_idx = j % STAGES
    prev = (j - 1) % STAGES
    mbarrier.wait(ready.index(s_idx), (j // STAGES) & 1)
    if PING_PONG:
        mbarrier.wait(turns.index(ROW0 // ROWS), ((j - 1) & 1) ^ FIRST)
    # S_j and the previous tile's P V in flight together; wait for S_j only
    s_tok = warpgroup_mma(
        q_tile,
        k_bufs.index(s_idx).permute((1, 0)),
        zero_s,
        use_acc=False,
        is_async=True,
    )
    acc_tok = warpgroup_mma(p_op, v_bufs.index(prev), acc, is_async=True)
    if PING_PONG:
        mbarrier.arrive(turns.index(1 - ROW0 // ROWS))
    s = warpgroup_mma_wait(1, deps=[s_tok])
    if DIAGONAL:
        s = _masked(s, diagonal, kv_len, q_pos, cols_layout)
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * scale_log2)
    p = gl.exp2(s * scale_log2 - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    quad_alpha = gl.convert_layout(alpha, gl.SliceLayout(1, l_i.type.layout))
    l_i = l_i * gl.expand_dims(quad_alpha, 1) + _quad_sums(p, ROWS)
    acc, p_op = warpgroup_mma_wait(0, deps=[acc_tok, p_op])
    mbarrier.arrive(empty.index(prev))
    alpha = gl.convert_layout(alpha, gl.SliceLayout(1, out_mma))
    acc = acc * gl.expand_dims(alpha, 1)
    if DIAGONAL:
        # fmt: off
        _diagonal_values(v_bufs.index(s_idx), diag_ready, diagonal, kv_len,
                         HEAD_DIM, PAGED, WARPS, ROW0, SPLIT)
        # fmt: on
    p_op = gl.convert_layout(p.to(q_tile.dtype), p_operand)
    return m_new, l_i, acc, p_op


@gluon.jit
def _attention_consumer(
    q_smem, k_bufs, v_bufs, ready, empty, diag_ready, turns,
    q_ptr, stride_qt, stride_qh, out_ptr, lse_ptr, stride_ot, stride_oh, stride_lt,
    count, r, kv_len, context, q_start, h, scale_log2,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, STAGES: gl.constexpr,
    WRITE_LSE: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr,
    WARPS: gl.constexpr, SPLIT: gl.constexpr, PING_PONG: gl.constexpr,
):  # fmt: skip
    """A consumer partition (``WARPS`` warps for the block's query rows ``ROW0 ..
    ROW0 + ROWS - 1``): the online softmax over the staged tiles, then the normalised
    output (and log-sum-exp) of its valid rows. With ``PING_PONG`` (split consumers)
    the two take turns issuing a tile's products (``turns``: the first's wait passes
    on a fresh barrier, each arrives on the other's), so one's softmax runs while the
    tensor cores work for the other."""
    BLOCK: gl.constexpr = q_smem.shape[0]
    mma: gl.constexpr = wgmma_layout(BLOCK, WARPS)
    out_mma: gl.constexpr = wgmma_layout(HEAD_DIM, WARPS)
    p_operand: gl.constexpr = gl.DotOperandLayout(
        operand_index=0, parent=out_mma, k_width=2
    )
    rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
    cols_layout: gl.constexpr = gl.SliceLayout(0, mma)
    dtype: gl.constexpr = q_smem.dtype
    q_tile = q_smem.slice(ROW0, ROWS)
    FIRST: gl.constexpr = 1 if ROW0 == 0 else 0  # the consumer that issues first

    # its query rows into shared memory (rows outside the chunk as zeros) while the
    # loader brings the first key and value tiles
    q_layout: gl.constexpr = query_layout(HEAD_DIM, WARPS)
    tokens = r * BLOCK + ROW0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, q_layout))
    in_chunk = (tokens >= context) & (tokens < kv_len)
    rows = (q_start + tokens - context).to(gl.int64)
    stage_queries(q_tile, q_ptr + h * stride_qh, rows, in_chunk, stride_qt, q_layout)

    q_pos = r * BLOCK + ROW0 + gl.arange(0, ROWS, layout=rows_layout)
    diagonal = r * BLOCK  # the diagonal tile's first token
    last = count - 1

    # tile 0: its product alone, then its softmax (the output starts at zero)
    mbarrier.wait(ready.index(0), 0)
    zero_s = gl.zeros([ROWS, BLOCK], gl.float32, layout=mma)
    s = warpgroup_mma(q_tile, k_bufs.index(0).permute((1, 0)), zero_s, use_acc=False)
    if last == 0:
        s = _masked(s, diagonal, kv_len, q_pos, cols_layout)
        # fmt: off
        _diagonal_values(v_bufs.index(0), diag_ready, diagonal, kv_len,
                         HEAD_DIM, PAGED, WARPS, ROW0, SPLIT)
        # fmt: on
    m_i = gl.max(s, axis=1) * scale_log2
    p = gl.exp2(s * scale_log2 - gl.expand_dims(m_i, 1))
    l_i = _quad_sums(p, ROWS)  # [ROWS, 4]: a row's sum per lane of its quad
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=out_mma)
    p_op = gl.convert_layout(p.to(dtype), p_operand)

    # tile 1, the diagonal block, masked; then every other tile without masks, the
    # loop last (the code after it only finishes the final tile)
    # fmt: off
    if last > 0:
        m_i, l_i, acc, p_op = _next_tile(
            1, q_tile, k_bufs, v_bufs, ready, empty, diag_ready, turns, zero_s, acc,
            p_op, m_i, l_i, diagonal, kv_len, q_pos, scale_log2, cols_layout, out_mma,
            p_operand, HEAD_DIM, PAGED, STAGES, ROW0, ROWS, WARPS, SPLIT, PING_PONG,
            FIRST, True)
    for j in range(2, count):
        m_i, l_i, acc, p_op = _next_tile(
            j, q_tile, k_bufs, v_bufs, ready, empty, diag_ready, turns, zero_s, acc,
            p_op, m_i, l_i, diagonal, kv_len, q_pos, scale_log2, cols_layout, out_mma,
            p_operand, HEAD_DIM, PAGED, STAGES, ROW0, ROWS, WARPS, SPLIT, PING_PONG,
            FIRST, False)
    # fmt: on

    acc = warpgroup_mma(p_op, v_bufs.index(last % STAGES), acc)

    out_rows: gl.constexpr = gl.SliceLayout(1, out_mma)
    q_pos_o = r * BLOCK + ROW0 + gl.arange(0, ROWS, layout=out_rows)
    q_ok = (q_pos_o >= context) & (q_pos_o < kv_len)
    q_rows = (q_start + q_pos_o - context).to(gl.int64)
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, out_mma))
    out = acc / gl.expand_dims(_row_sums(l_i, out_rows), 1)
    offsets = gl.expand_dims(q_rows * stride_ot + h * stride_oh, 1) + gl.expand_dims(
        d, 0
    )
    mask = gl.expand_dims(q_ok, 1) & gl.expand_dims(d < HEAD_DIM, 0)
    gl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)
    if WRITE_LSE:
        # base 2 -> natural log
        lse = (m_i + gl.log2(_row_sums(l_i, rows_layout))) * 0.6931471805599453
        ok_rows = (q_pos >= context) & (q_pos < kv_len)
        lse_rows = (q_start + q_pos - context).to(gl.int64)
        gl.store(lse_ptr + lse_rows * stride_lt + h, lse, mask=ok_rows)


@gluon.jit(do_not_specialize=["stride_table", "stride_ih", "stride_ib", "stride_ch"])
def _hopper_sparse_attention_kernel(
    q_ptr, out_ptr, lse_ptr, stride_qt, stride_qh, stride_ot, stride_oh, stride_lt,
    k_desc, v_desc, table_ptr, stride_table,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    block_request, block_row,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,
    scale_log2, group,
    PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
    BLOCK: gl.constexpr, STAGES: gl.constexpr, WRITE_LSE: gl.constexpr,
    PING_PONG: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    # a consumer partition of num_warps warps covers 16 rows a warp: at 128-token
    # blocks 8 warps are one consumer, 4 are two (64 rows apiece), which the warp
    # schedulers interleave freely; at 64-token blocks 4 warps are one
    ROWS: gl.constexpr = 16 * num_warps
    SPLIT: gl.constexpr = BLOCK == 2 * ROWS
    gl.static_assert(SPLIT or BLOCK == ROWS, "a block is one or two consumers' rows")
    g = gl.program_id(0)  # global query block (a head's blocks side by side)
    h = gl.program_id(1)
    req = gl.load(block_request + g)
    r = gl.load(block_row + g)
    kv_len = gl.load(req_kv_len + req)
    context = kv_len - gl.load(req_q_len + req)
    q_start = gl.load(req_q_start + req)
    k_start = gl.load(req_k_start + req)
    table_row_ptr = table_ptr + gl.load(req_table_row + req).to(gl.int64) * stride_table
    kvh = h // group
    index_row = index_ptr + h.to(gl.int64) * stride_ih + g.to(gl.int64) * stride_ib
    count = gl.load(count_ptr + h.to(gl.int64) * stride_ch + g)

    dtype: gl.constexpr = k_desc.dtype
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for(
        [BLOCK, HEAD_DIM], dtype
    )
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK, HEAD_DIM], tile_layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], tile_layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], tile_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    diag_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2 if SPLIT else 1)  # one per consumer
    mbarrier.init(diag_ready, count=1)
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(turns.index(i), count=1)
    fence_async_shared()  # the initialised barriers visible to the bulk copies
    gl.thread_barrier()

    # fmt: off
    if SPLIT:
        gl.warp_specialize(
            [
                (_attention_consumer, (
                    q_smem, k_bufs, v_bufs, ready, empty, diag_ready, turns,
                    q_ptr, stride_qt, stride_qh, out_ptr, lse_ptr, stride_ot, stride_oh,
                    stride_lt,
                    count, r, kv_len, context, q_start, h, scale_log2,
                    HEAD_DIM, PAGED, STAGES, WRITE_LSE, 0, ROWS, num_warps, SPLIT,
                    PING_PONG)),
                (_attention_consumer, (
                    q_smem, k_bufs, v_bufs, ready, empty, diag_ready, turns,
                    q_ptr, stride_qt, stride_qh, out_ptr, lse_ptr, stride_ot, stride_oh,
                    stride_lt,
                    count, r, kv_len, context, q_start, h, scale_log2,
                    HEAD_DIM, PAGED, STAGES, WRITE_LSE, ROWS, ROWS, num_warps, SPLIT,
                    PING_PONG)),
                (_kv_loader, (
                    k_desc, v_desc, k_bufs, v_bufs, ready, empty,
                    index_row, count, kv_len, k_start, table_row_ptr, kvh,
                    HEAD_DIM, PAGED, PAGE_SIZE, STAGES)),
            ],
            [num_warps, 1],
            [CONSUMER_REGISTERS, LOADER_REGISTERS],
        )
    else:
        gl.warp_specialize(
            [
                (_attention_consumer, (
                    q_smem, k_bufs, v_bufs, ready, empty, diag_ready, turns,
                    q_ptr, stride_qt, stride_qh, out_ptr, lse_ptr, stride_ot, stride_oh,
                    stride_lt,
                    count, r, kv_len, context, q_start, h, scale_log2,
                    HEAD_DIM, PAGED, STAGES, WRITE_LSE, 0, ROWS, num_warps, SPLIT,
                    False)),
                (_kv_loader, (
                    k_desc, v_desc, k_bufs, v_bufs, ready, empty,
                    index_row, count, kv_len, k_start, table_row_ptr, kvh,
                    HEAD_DIM, PAGED, PAGE_SIZE, STAGES)),
            ],
            [1],
            [LOADER_REGISTERS],
        )
    # fmt: on


@dataclass(frozen=True)
class HopperLaunch:
    """Launch parameters of this kernel: ``num_warps`` 8 (one consumer partition of
    two warp groups) or 4 (two partitions of one; at 64-token blocks, one),
    ``num_stages`` K/V stages (2 or 3: three 128 x 128 K and V tiles and the queries
    fill 224 KB; at 64-token blocks 112 KB, two programs an SM)."""

    num_warps: int = 4
    num_stages: int = 3
    # two consumers only: they take turns issuing their products (FA3's ping-pong)
    ping_pong: bool = False


def hopper_sparse_attention(
    q, kv, plan, kv_index, kv_count, scale_log2, out, lse, launch: HopperLaunch
) -> None:
    """Launch over the plan (arguments as ``sparse_attention.block_sparse_attention``
    takes them, the scale already in base 2); ``supports`` must hold for the plan's
    block size, 64 or 128 (64: ``launch.num_warps`` 4)."""
    Hq, D = q.shape[1], q.shape[2]
    block = plan.block_size
    if block == 64 and launch.num_warps != 4:
        raise ValueError(
            f"HopperLaunch.num_warps={launch.num_warps}: 64-token blocks take 4 "
            "(one consumer warp group of 64 rows)"
        )
    split = block == 2 * 16 * launch.num_warps
    rows = copy_rows(kv, block)
    table, table_stride = kv.table_args()
    _hopper_sparse_attention_kernel[(plan.num_q_blocks, Hq)](
        q, out, lse if lse is not None else out,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        lse.stride(0) if lse is not None else 0,
        tile_descriptor(kv.key, kv.paged, rows),
        tile_descriptor(kv.value, kv.paged, rows),
        table, table_stride,
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        plan.block_request, plan.block_row,
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        scale_log2, Hq // kv.num_kv_heads,
        PAGED=kv.paged, PAGE_SIZE=kv.page_size, HEAD_DIM=D, BLOCK=block,
        STAGES=launch.num_stages, WRITE_LSE=lse is not None,
        PING_PONG=launch.ping_pong and split, num_warps=launch.num_warps,
        maxnreg=MAX_REGISTERS if block == 128 else PAIR_MAX_REGISTERS,
    )  # fmt: skip
