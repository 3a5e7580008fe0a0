"""The probe: each request's last ``n = min(B, q_len)`` queries attend causally to all
of its keys; the softmax is reduced on the fly, never stored.

Two passes over the keys, per (query head, request):

1. ``_probe_row_stats_kernel`` (split over key ranges for parallelism; on Hopper,
   ``hopper_probe.py``'s warp-specialised twin): each probe row's running max and sum
   per split; then ``_probe_lse_kernel`` combines them into the row's log-sum-exp and
   writes the mean of the probe queries (the pooled query of the pattern estimate).
2. ``_probe_scores_kernel`` (one or a few key blocks per program, a slab of probe rows
   at a time; on Hopper, ``hopper_probe_scores.py``'s warp-specialised twin):
   recomputes each block's probabilities ``P [n, B]`` and reduces them to

   * ``vertical_tokens[x] = sum_y P[y, x] / n`` (each key written by one program);
   * ``slash_tokens[d] = sum_y P[y, pos_y - d] / n``: the tile's diagonals, read as the
     columns of ``[SLAB, SLAB]`` sub-tiles skewed row by row (``tl.gather`` along
     one warp's lanes), placed in the tile's diagonals by their offsets; a diagonal
     crosses two adjacent key blocks, so each entry gets exactly two atomic adds on a
     zeroed buffer, which is deterministic;
   * ``vertical_blocks[c]``, and ``slash_blocks[r - c]`` for the (at most two) query
     blocks ``r`` the probe rows fall in (again two atomic adds per entry).

Scores and outputs are float32; fp8 queries and keys are dequantised in registers
(``quant.py``). Per-key scores are ragged: request ``i``'s keys occupy
columns ``kv_offset[i] .. kv_offset[i+1]-1`` of ``tokens [2, Hq, total_kv_len]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

from . import hopper_common, hopper_probe_scores
from .hopper_probe import hopper_probe_row_stats
from .kv_access import load_key_tile
from .plan import KVSource, SparsePlan
from .quant import is_fp8, query_key_products, scale_of
from .utils import dot_precision

SPLIT_TOKENS = 8192  # keys per program in the log-sum-exp pass


@dataclass
class ProbeOutput:
    """Batched probe results (float32), per query head: token scores ragged over the
    requests' keys, block scores and means per request."""

    # [2, Hq, total_kv_len]: vertical, then slash (index = distance), ragged
    tokens: torch.Tensor
    # [2, R, Hq, max_k_blocks]: vertical (index = key block), then slash (block offset)
    blocks: torch.Tensor
    probe_mean: torch.Tensor  # [R, Hq, D], mean of the probe queries

    @property
    def vertical_blocks(self) -> torch.Tensor:
        return self.blocks[0]

    @property
    def slash_blocks(self) -> torch.Tensor:
        return self.blocks[1]


@triton.jit
def _load_probe(
    q_ptr, stride_qt, stride_qh, h, q_start, q_len, kv_len, d, d_ok, BLOCK: tl.constexpr
):
    """The probe rows ``y < n`` (padded to BLOCK): their queries, absolute
    positions and validity."""
    n = tl.minimum(q_len, BLOCK)
    y = tl.arange(0, BLOCK)
    row_ok = y < n
    rows = (q_start + q_len - n + y).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + h * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    return q, kv_len - n + y, row_ok, n


@triton.jit
def running_max_and_sum(m_i, l_i, s):
    """One step of a row-wise log-sum-exp in base 2: the running max ``m_i`` and sum
    ``l_i [rows]`` after the scores ``s [rows, keys]`` (``-inf``: masked; rows that
    have seen no key yet keep a sum of 0)."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    l_new = l_i * tl.math.exp2(m_i - m_safe) + tl.sum(
        tl.math.exp2(s - m_safe[:, None]), 1
    )
    return m_new, l_new


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_table"])
def _probe_row_stats_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    max_ptr, sum_ptr, stride_m_r, stride_m_h, stride_m_s,  # [R, Hq, splits, BLOCK]
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Each probe row's running max and sum (base 2) over split ``program_id(2)``'s
    keys (a split past the keys: -inf and 0)."""
    h = tl.program_id(0)
    req = tl.program_id(1)
    split = tl.program_id(2)
    kv_len = tl.load(req_kv_len + req)
    q_len = tl.load(req_q_len + req)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q, pos, row_ok, n = _load_probe(
        q_ptr, stride_qt, stride_qh, h, tl.load(req_q_start + req), q_len, kv_len,
        d, d_ok, BLOCK,
    )  # fmt: skip
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kvh = h // group
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)

    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    for start in range(split * SPLIT, tl.minimum((split + 1) * SPLIT, kv_len), BLOCK):
        keys = start + tl.arange(0, BLOCK)
        key_ok = keys < kv_len
        k = load_key_tile(
            k_ptr, kvh * stride_kh, keys, key_ok, k_start, table_row_ptr, stride_kp,
            stride_ks, d, d_ok, PAGED, PAGE_SIZE,
        )  # fmt: skip
        s = query_key_products(q, k, DOT_PRECISION) * scale_log2
        s = tl.where(
            key_ok[None, :] & (keys[None, :] <= pos[:, None]), s, float("-inf")
        )
        m_i, l_i = running_max_and_sum(m_i, l_i, s)
    y = tl.arange(0, BLOCK)
    row = req * stride_m_r + h * stride_m_h + split * stride_m_s
    tl.store(max_ptr + row + y, m_i)
    tl.store(sum_ptr + row + y, l_i)


@triton.jit
def _probe_lse_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    req_q_start, req_q_len, req_kv_len,
    max_ptr, sum_ptr, stride_m_r, stride_m_h, stride_m_s,
    lse_ptr, stride_lse_r, stride_lse_h,  # [R, Hq, BLOCK], base 2
    mean_ptr, stride_mean_r, stride_mean_h,  # [R, Hq, D]
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    SPLIT: tl.constexpr,
):  # fmt: skip
    """Per (query head, request): the probe rows' log-sum-exp from the running maxima
    and sums of the splits holding its keys, and the mean of the probe queries (the
    pooled query of the pattern estimate). The split count comes from the request's
    own length, not from an argument that would grow with it and give Triton a new
    specialisation to compile mid-request."""
    h = tl.program_id(0)
    req = tl.program_id(1)
    q_len = tl.load(req_q_len + req)
    kv_len = tl.load(req_kv_len + req)
    splits = tl.cdiv(kv_len, SPLIT)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q, _, _, n = _load_probe(
        q_ptr, stride_qt, stride_qh, h, tl.load(req_q_start + req), q_len, kv_len,
        d, d_ok, BLOCK,
    )  # fmt: skip
    mean = tl.sum(q.to(tl.float32), 0) * (scale_of(q_scale_ptr) / n)
    tl.store(mean_ptr + req * stride_mean_r + h * stride_mean_h + d, mean, mask=d_ok)
    y = tl.arange(0, BLOCK)
    row = req * stride_m_r + h * stride_m_h
    top = tl.full([BLOCK], float("-inf"), tl.float32)
    for s in range(0, splits):
        top = tl.maximum(top, tl.load(max_ptr + row + s * stride_m_s + y))
    top = tl.where(top == float("-inf"), 0.0, top)
    total = tl.zeros([BLOCK], tl.float32)
    for s in range(0, splits):
        part_max = tl.load(max_ptr + row + s * stride_m_s + y)
        total += tl.load(sum_ptr + row + s * stride_m_s + y) * tl.math.exp2(
            part_max - top
        )
    tl.store(lse_ptr + req * stride_lse_r + h * stride_lse_h + y, top + tl.log2(total))


@triton.jit
def _score_key_block(
    c,
    q_ptr, stride_qt, stride_qh, h, q_first, n, kv_len,
    k_ptr, kv_args_h, table_row_ptr, k_start, stride_kp, stride_ks,
    lse_row, log2_n, scale_log2,
    vtok_ptr, stok_ptr, tok, vblk_ptr, sblk_ptr, blk,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    SLAB: tl.constexpr, DOT_PRECISION: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """Scores of key block ``c``. Unmasked (``MASKED`` False) when every probe row sees
    every key of the block, i.e. all but the last one or two blocks:
    no per-element mask."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    keys = c * BLOCK + tl.arange(0, BLOCK)
    key_ok = keys < kv_len
    k = load_key_tile(
        k_ptr, kv_args_h, keys, key_ok, k_start, table_row_ptr, stride_kp, stride_ks,
        d, d_ok, PAGED, PAGE_SIZE,
    )  # fmt: skip
    last_row_block = (kv_len - 1) // BLOCK
    column_mass = tl.zeros([BLOCK], tl.float32)
    # Diagonals, a [SLAB, SLAB] sub-tile at a time: row r of a sub-tile skewed by r
    # (a gather along SLAB lanes, one shuffle an element), so that its column t holds
    # the sub-tile's diagonal r - k = t (rows r >= t) and t - SLAB (rows r < t).
    TILES: tl.constexpr = BLOCK // SLAB
    r = tl.arange(0, SLAB)[:, None, None]
    t = tl.arange(0, SLAB)[None, None, :]
    skew = tl.broadcast_to((r - t + SLAB) % SLAB, (SLAB, TILES, SLAB))
    below = r >= t
    # The tile's diagonals y - j = m, m in [-BLOCK, BLOCK), as 2 * TILES chunks of SLAB
    # (chunk (m + BLOCK) // SLAB); sub-tile a of slab s adds its two halves at chunks
    # s - a + TILES and s - a + TILES - 1.
    diagonals = tl.zeros([2 * TILES, SLAB], tl.float32)
    chunk = tl.arange(0, 2 * TILES)[:, None, None]
    a = tl.arange(0, TILES)[None, :, None]
    mass_last = 0.0
    mass_prev = 0.0
    for slab in range(BLOCK // SLAB):  # rolled: unrolled, the slabs spill registers
        y = slab * SLAB + tl.arange(0, SLAB)  # probe rows of this slab
        row_ok = y < n
        pos = kv_len - n + y
        q = tl.load(
            q_ptr
            + (q_first + y).to(tl.int64)[:, None] * stride_qt
            + h * stride_qh
            + d[None, :],
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        # log2(n) folds the mean over probe rows into the exponent;
        # rows past n get p = 0.
        shift = tl.load(lse_row + y, mask=row_ok, other=float("inf")) + log2_n
        s = query_key_products(q, k, DOT_PRECISION)
        p = tl.math.exp2(s * scale_log2 - shift[:, None])  # [SLAB rows, BLOCK keys]
        if MASKED:
            p = tl.where(key_ok[None, :] & (keys[None, :] <= pos[:, None]), p, 0.0)
        column_mass += tl.sum(p, 0)
        skewed = tl.gather(tl.reshape(p, (SLAB, TILES, SLAB)), skew, axis=2)
        lower = tl.sum(tl.where(below, skewed, 0.0), 0)  # [TILES, SLAB]
        upper = tl.sum(tl.where(below, 0.0, skewed), 0)
        diagonals += tl.sum(
            tl.where(chunk == slab - a + TILES, lower[None, :, :], 0.0)
            + tl.where(chunk == slab - a + TILES - 1, upper[None, :, :], 0.0),
            1,
        )
        row_mass = tl.sum(p, 1)
        in_last = (pos // BLOCK) == last_row_block  # else the query block before it
        mass_last += tl.sum(tl.where(in_last, row_mass, 0.0), 0)
        mass_prev += tl.sum(tl.where(in_last, 0.0, row_mass), 0)
    tl.store(vtok_ptr + tok + keys, column_mass, mask=key_ok)
    tl.store(vblk_ptr + blk + c, tl.sum(column_mass, 0))
    # distance of diagonal m: (row 0's position - the block's first key) + m
    m = tl.arange(0, 2 * BLOCK) - BLOCK
    distance = kv_len - n - c * BLOCK + m
    # Relaxed: plain accumulation, read only after the kernel
    # (no fence, no wait per add).
    tl.atomic_add(
        stok_ptr + tok + distance,
        tl.reshape(diagonals, (2 * BLOCK,)),
        mask=(m > -BLOCK) & (distance >= 0) & (distance < kv_len),
        sem="relaxed",
    )
    tl.atomic_add(sblk_ptr + blk + last_row_block - c, mass_last, sem="relaxed")
    tl.atomic_add(
        sblk_ptr + blk + last_row_block - 1 - c,
        mass_prev,
        mask=last_row_block - 1 - c >= 0,
        sem="relaxed",
    )


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["stride_table", "stride_tok_h", "stride_blk_r", "stride_blk_h"],
    do_not_specialize_on_alignment=["stok_ptr", "sblk_ptr"],
)
def _probe_scores_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row, req_kv_offset,
    lse_ptr, stride_lse_r, stride_lse_h,  # [R, Hq, BLOCK], base 2
    vtok_ptr, stok_ptr, stride_tok_h,  # [Hq, total_kv_len] each, ragged
    vblk_ptr, sblk_ptr, stride_blk_r, stride_blk_h,  # [R, Hq, max_k_blocks]
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    BLOCKS_PER_PROGRAM: tl.constexpr, SLAB: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Key blocks ``first .. first + BLOCKS_PER_PROGRAM - 1``; each is processed
    ``SLAB`` probe rows at a time (smaller tiles: fewer registers, more programs
    per SM)."""
    h = tl.program_id(0)
    req = tl.program_id(1)
    first = tl.program_id(2) * BLOCKS_PER_PROGRAM
    kv_len = tl.load(req_kv_len + req)
    if first * BLOCK >= kv_len:
        return
    q_len = tl.load(req_q_len + req)
    n = tl.minimum(q_len, BLOCK)  # probe rows
    log2_n = tl.log2(n.to(tl.float32))
    q_first = tl.load(req_q_start + req) + q_len - n  # row of the first probe query
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    k_start = tl.load(req_k_start + req)
    kv_h = (h // group) * stride_kh
    tok = h.to(tl.int64) * stride_tok_h + tl.load(req_kv_offset + req)
    blk = req.to(tl.int64) * stride_blk_r + h * stride_blk_h
    lse_row = lse_ptr + req * stride_lse_r + h * stride_lse_h
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    last = tl.minimum(first + BLOCKS_PER_PROGRAM, tl.cdiv(kv_len, BLOCK))
    unmasked_end = tl.minimum(
        tl.maximum((kv_len - n + 1) // BLOCK, first), last
    )  # blocks below every probe row
    block_args = (
        q_ptr, stride_qt, stride_qh, h, q_first, n, kv_len,
        k_ptr, kv_h, table_row_ptr, k_start, stride_kp, stride_ks,
        lse_row, log2_n, scale_log2,
        vtok_ptr, stok_ptr, tok, vblk_ptr, sblk_ptr, blk,
    )  # fmt: skip
    for c in range(first, unmasked_end):
        _score_key_block(
            c, *block_args,
            PAGED, PAGE_SIZE, HEAD_DIM, BLOCK_D, BLOCK, SLAB, DOT_PRECISION, False,
        )  # fmt: skip
    for c in range(unmasked_end, last):
        _score_key_block(
            c, *block_args,
            PAGED, PAGE_SIZE, HEAD_DIM, BLOCK_D, BLOCK, SLAB, DOT_PRECISION, True,
        )  # fmt: skip


@dataclass(frozen=True)
class ProbeLaunch:
    """Launch parameters of the probe: the scores pass's (``scripts/bench_search.py``
    sweeps them) and which kernel computes the log-sum-exp statistics.

    ``num_stages`` 1: Triton's software pipelining of the key-tile loads multiplies the
    shared memory (a 128-row slab with 3 stages needs 256 KB, more than an H200 SM has),
    and the pass is latency-bound. The defaults are the fastest measured on the H200
    (benchmarks/NOTES.md, run 4); see :meth:`default` for the register cap."""

    blocks_per_program: int = 8
    slab: int | None = 32  # probe rows per step (None: the whole block)
    num_warps: int = 4
    num_stages: int = 1
    # registers a thread at most (ptxas' maxnreg; None: its own choice)
    max_registers: int | None = None
    # the log-sum-exp pass's statistics by the warp-specialised Hopper kernel where it
    # covers the batch (hopper_probe.py), else by the portable one
    hopper_row_stats: bool = True
    # the scores pass likewise (hopper_probe_scores.py), with this many key blocks a
    # program
    hopper_scores: bool = True
    hopper_blocks_per_program: int = hopper_probe_scores.BLOCKS_PER_PROGRAM

    @classmethod
    def default(cls, head_dim: int, quantised: bool) -> ProbeLaunch:
        """The launch ``probe`` takes unless told: registers capped at 128 for 16-bit
        queries and keys and head dims up to 128 (measured at 128, run 18, 128K: 2.23
        ms against 2.41 uncapped; four programs an SM instead of three, 40 bytes a
        thread spilled, 128 from the paged cache, whose search gained as much; a
        smaller head needs fewer registers); uncapped elsewhere (fp8 and head dim 256
        would spill 256-280 bytes; not measured)."""
        capped = head_dim <= 128 and not quantised
        return cls(max_registers=128 if capped else None)

    def compile_options(self) -> dict:
        """Triton's launch options for these parameters."""
        options = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        if self.max_registers is not None:
            options["maxnreg"] = self.max_registers
        return options


def lse_stages(head_dim: int) -> int:
    """Pipeline stages of the LSE pass: three key tiles in flight exceed an SM's shared
    memory above head dim 128."""
    return 3 if head_dim <= 128 else 2


def probe(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    scale: float,
    launch: ProbeLaunch | None = None,
    tokens: torch.Tensor | None = None,
    q_scale: torch.Tensor | None = None,
) -> ProbeOutput:
    """Run both probe passes for every request of the plan (see the module docstring).
    ``tokens``: a zeroed float32 ``[2, Hq, total_kv_len]`` to fill
    (default: allocated); ``q_scale``: fp8 queries' scale."""
    R, Hq, D = plan.num_requests, q.shape[1], q.shape[2]
    fp8 = is_fp8(q.dtype) or is_fp8(kv.key.dtype)
    launch = launch or ProbeLaunch.default(D, quantised=fp8)
    B = plan.block_size
    dev = q.device
    f32 = dict(dtype=torch.float32, device=dev)
    splits = cdiv(plan.max_kv_len, SPLIT_TOKENS)
    key_args = kv.key_args()
    query_args = (q, q.stride(0), q.stride(1), q_scale)
    req_args = (plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row)
    common = dict(
        PAGED=kv.paged,
        PAGE_SIZE=kv.page_size,
        HEAD_DIM=D,
        BLOCK_D=triton.next_power_of_2(D),
        BLOCK=B,
        DOT_PRECISION=dot_precision(q.dtype),
        num_warps=8 if B * D >= 128 * 128 else 4,
    )
    scale_log2 = scale * math.log2(math.e)
    group = Hq // kv.num_kv_heads

    row_max = torch.empty(R, Hq, splits, B, **f32)
    row_sum = torch.empty(R, Hq, splits, B, **f32)
    if launch.hopper_row_stats and hopper_common.supports(q, kv, B):
        hopper_probe_row_stats(
            q, kv, plan, scale_log2, row_max, row_sum, SPLIT_TOKENS // B
        )
    else:
        _probe_row_stats_kernel[(Hq, R, splits)](
            *query_args, *key_args, *req_args, row_max, row_sum,
            *row_max.stride()[:3], scale_log2, group, SPLIT=SPLIT_TOKENS, **common,
            num_stages=lse_stages(D),
        )  # fmt: skip
    lse = torch.empty(R, Hq, B, **f32)
    probe_mean = torch.empty(R, Hq, D, **f32)
    _probe_lse_kernel[(Hq, R)](
        *query_args, plan.q_start, plan.q_len, plan.kv_len,
        row_max, row_sum, *row_max.stride()[:3],
        lse, lse.stride(0), lse.stride(1),
        probe_mean, probe_mean.stride(0), probe_mean.stride(1),
        HEAD_DIM=D, BLOCK_D=common["BLOCK_D"], BLOCK=B, SPLIT=SPLIT_TOKENS, num_warps=4,
    )  # fmt: skip

    if tokens is None:
        tokens = torch.zeros(2, Hq, plan.total_kv_len, **f32)
    out = ProbeOutput(
        tokens, torch.zeros(2, R, Hq, plan.max_k_blocks, **f32), probe_mean
    )
    if launch.hopper_scores and hopper_common.supports(q, kv, B):
        hopper_probe_scores.hopper_probe_scores(
            q, kv, plan, scale_log2, lse, out.tokens, out.blocks,
            launch.hopper_blocks_per_program,
        )  # fmt: skip
        return out
    scores_launch = dict(common, **launch.compile_options())
    _probe_scores_kernel[(Hq, R, cdiv(plan.max_k_blocks, launch.blocks_per_program))](
        *query_args, *key_args, *req_args, plan.kv_offset,
        lse, lse.stride(0), lse.stride(1),
        out.tokens[0], out.tokens[1], out.tokens.stride(1),
        out.vertical_blocks, out.slash_blocks,
        out.vertical_blocks.stride(0), out.vertical_blocks.stride(1),
        scale_log2, group,
        BLOCKS_PER_PROGRAM=launch.blocks_per_program, SLAB=min(launch.slab or B, B),
        **scores_launch,
    )  # fmt: skip
    return out
