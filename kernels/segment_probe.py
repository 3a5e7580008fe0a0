"""The vsgrid probes (``selection: vsgrid``): each request's chunk is cut into segments
of query blocks (``ChunkGeometry.segments``); a segment's probe, up to
``SEGMENT_PROBE_ROWS`` strided queries of its last query block
(``ChunkGeometry.segment_probe``), attends causally to the keys up to each query's
position, and the softmax is reduced to the probe's mean mass on each key block. Never
stored: ``P [rows, keys]``.

Two kernels:

1. ``_segment_tile_lse_kernel``, one pass over the keys: a program takes the probe rows
   of every query head of one KV head it can (``tile_lse_launch``: 4 heads x 32 rows
   fill a 128-row product, so each key tile is read once for the group) and a run of
   key blocks, and stores each row's log-sum-exp over each key block alone (base 2)
   into ``[Hq, tiles, ROWS]``, the probes' key blocks end to end
   (``SegmentProbes.first_tile``);
2. ``_segment_masses_kernel``, one program per (query head, probe): each row's
   log-sum-exp over all its blocks from those, then each block's mass ``sum over rows
   of 2^(block's - row's) / rows``; zeros past the probe's keys.

Scores are float32; fp8 queries and keys are dequantised in registers (``quant.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import ChunkGeometry, cdiv
from vllm_flexprefill.selection import SEGMENT_PROBE_ROWS, SEGMENTS

from .kv_access import load_key_tile
from .plan import KVSource, SparsePlan
from .probe import running_max_and_sum
from .quant import query_key_products, scale_of
from .utils import device_int32_parts, dot_precision

TILES_PER_PROGRAM = 32  # key blocks a program of the first pass takes
MASS_TILES = 64  # key blocks per step of the second pass


@dataclass(frozen=True)
class SegmentProbes:
    """The batch's vsgrid probes (requests in order, then segments in order) and the
    probe each query block reads. Positions are absolute within the request's
    sequence."""

    request: torch.Tensor  # [P] int32
    last: torch.Tensor  # [P] int32, the probe's last query
    stride: torch.Tensor  # [P] int32, between its queries
    count: torch.Tensor  # [P] int32, its queries (<= SEGMENT_PROBE_ROWS)
    block: torch.Tensor  # [P] int32, the global query block it sits in
    row_probe: torch.Tensor  # [T] int64: the probe of global query block t
    # [T] int64: a_e - a_t, the probe's query block minus t's (absolute indices)
    row_shift: torch.Tensor
    last_probe: torch.Tensor  # [R] int64: each request's last probe (its chunk's end)
    # [P] int32: where the probe's key blocks start among all probes' (each probe
    # sees key blocks 0 .. last // block_size)
    first_tile: torch.Tensor
    num_tiles: int  # all probes' key blocks

    @property
    def num_probes(self) -> int:
        return self.request.shape[0]

    def last_probe_means(
        self, q: torch.Tensor, plan: SparsePlan, q_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[R, Hq, D]`` float32: the mean query of each request's last probe (the
        pooled query of its pattern estimate)."""
        last = self.last_probe
        count = self.count[last].long()
        y = torch.arange(SEGMENT_PROBE_ROWS, device=q.device)
        pos = self.last[last, None] - self.stride[last, None] * (count[:, None] - 1 - y)
        rows = (plan.q_start + plan.q_len - plan.kv_len)[:, None] + pos
        taken = (y < count[:, None]).float()[:, :, None, None]
        queries = q[rows.clamp(0, q.shape[0] - 1)].float() * taken
        mean = queries.sum(1) / count[:, None, None]
        return mean if q_scale is None else mean * q_scale

    @classmethod
    def build(cls, plan: SparsePlan) -> SegmentProbes:
        probes, row_probe, row_shift, last_probe = [], [], [], []
        num_tiles = 0
        for i, (q_len, kv_len) in enumerate(
            zip(plan.q_lens, plan.kv_lens, strict=True)
        ):
            geo = ChunkGeometry(q_len, kv_len, plan.block_size)
            for first, last in geo.segments(SEGMENTS):
                row_probe += [len(probes)] * (last + 1 - first)
                row_shift += [last - row for row in range(first, last + 1)]
                last_query, stride, count = geo.segment_probe(last, SEGMENT_PROBE_ROWS)
                block = len(row_probe) - 1  # the segment's last row, globally
                probes.append((i, last_query, stride, count, block, num_tiles))
                num_tiles += last_query // plan.block_size + 1
            last_probe.append(len(probes) - 1)
        parts = zip(*probes, strict=True)
        views = device_int32_parts(
            [*map(list, parts), row_probe, row_shift, last_probe], plan.kv_len.device
        )
        request, last, stride, count, block, first_tile, *indices = views
        row_probe, row_shift, last_probe = (view.long() for view in indices)
        return cls(
            request, last, stride, count, block, row_probe, row_shift, last_probe,
            first_tile, num_tiles,
        )  # fmt: skip


@triton.jit
def _probe_rows(
    q_ptr, stride_qt, stride_qh, q_scale_ptr, stride_kh, table_ptr, stride_table,
    k_scale_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    probe_request, probe_last, probe_stride, probe_count,
    g, p, d, d_ok, scale_log2, group, HEADS: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """What a program of (head group ``g``, probe ``p``) reads first: the probe's
    queries of query heads ``g * HEADS ..`` (one KV head's; ``[HEADS * ROWS, D]``, head
    by head, rows past the probe's count zero), each row's head, probe row, position
    and validity; the probe's last query; its request's first key row, block-table
    row and KV head offset; the softmax scale (base 2) with the fp8 scales folded
    in."""
    req = tl.load(probe_request + p)
    count = tl.load(probe_count + p)
    last = tl.load(probe_last + p)
    i = tl.arange(0, HEADS * ROWS)
    h = g * HEADS + i // ROWS
    y = i % ROWS
    row_ok = y < count
    pos = last - tl.load(probe_stride + p) * (count - 1 - y)
    context = tl.load(req_kv_len + req) - tl.load(req_q_len + req)
    rows = (tl.load(req_q_start + req) + pos - context).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + h[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kv_h = (g * HEADS // group) * stride_kh
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    return q, h, y, pos, row_ok, last, k_start, table_row_ptr, kv_h, scale_log2


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_table", "stride_out_h"])
def _segment_tile_lse_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    probe_request, probe_last, probe_stride, probe_count, probe_first_tile,
    out_ptr, stride_out_h,  # [Hq, tiles, ROWS] float32
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr, HEADS: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    p = tl.program_id(1)
    first = tl.program_id(2) * TILES_PER_PROGRAM
    tiles = tl.cdiv(tl.load(probe_last + p) + 1, BLOCK)  # key blocks the probe sees
    if first >= tiles:
        return
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q, h, y, pos, row_ok, last, k_start, table_row_ptr, kv_h, scale_log2 = _probe_rows(
        q_ptr, stride_qt, stride_qh, q_scale_ptr, stride_kh, table_ptr, stride_table,
        k_scale_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
        probe_request, probe_last, probe_stride, probe_count,
        g, p, d, d_ok, scale_log2, group, HEADS, ROWS,
    )  # fmt: skip
    out_rows = (
        out_ptr
        + h.to(tl.int64) * stride_out_h
        + tl.load(probe_first_tile + p).to(tl.int64) * ROWS
        + y
    )
    for c in range(first, tl.minimum(first + TILES_PER_PROGRAM, tiles)):
        keys = c * BLOCK + tl.arange(0, BLOCK)
        key_ok = keys <= last
        k = load_key_tile(
            k_ptr, kv_h, keys, key_ok, k_start, table_row_ptr, stride_kp, stride_ks,
            d, d_ok, PAGED, PAGE_SIZE,
        )  # fmt: skip
        s = query_key_products(q, k, DOT_PRECISION) * scale_log2
        s = tl.where(keys[None, :] <= pos[:, None], s, float("-inf"))
        top = tl.max(s, 1)
        top = tl.where(top == float("-inf"), 0.0, top)  # a row seeing no key: -inf
        lse = top + tl.log2(tl.sum(tl.math.exp2(s - top[:, None]), 1))
        tl.store(out_rows + c * ROWS, lse, mask=row_ok)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["stride_tile_h", "stride_out_p", "stride_out_h", "width"]
)
def _segment_masses_kernel(
    tile_lse_ptr, stride_tile_h,  # [Hq, tiles, ROWS] float32, base 2
    probe_last, probe_count, probe_first_tile,
    out_ptr, stride_out_p, stride_out_h,  # [P, Hq, width] float32
    width,
    BLOCK: tl.constexpr, ROWS: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    p = tl.program_id(1)
    tiles = tl.cdiv(tl.load(probe_last + p) + 1, BLOCK)
    count = tl.load(probe_count + p)
    y = tl.arange(0, ROWS)
    row_ok = y < count
    row_base = (
        tile_lse_ptr
        + h.to(tl.int64) * stride_tile_h
        + tl.load(probe_first_tile + p).to(tl.int64) * ROWS
    )
    # each probe row's log-sum-exp over its key blocks' log-sum-exps
    m_i = tl.full([ROWS], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    for first in range(0, tiles, TILE):
        c = first + tl.arange(0, TILE)
        taken = row_ok[:, None] & (c < tiles)[None, :]
        t = tl.load(
            row_base + y[:, None] + c[None, :] * ROWS, mask=taken, other=float("-inf")
        )  # [ROWS, TILE]
        m_i, l_i = running_max_and_sum(m_i, l_i, t)
    # log2(count) folds the mean over the probe's rows into the exponent; rows past
    # the count read -inf (no mass) against a finite shift
    lse = m_i + tl.log2(tl.where(row_ok, l_i, 1.0))
    shift = tl.where(row_ok, lse + tl.log2(count.to(tl.float32)), 0.0)
    out_row = out_ptr + p.to(tl.int64) * stride_out_p + h * stride_out_h
    for first in range(0, width, TILE):
        c = first + tl.arange(0, TILE)
        taken = (c < tiles)[:, None] & row_ok[None, :]
        t = tl.load(
            row_base + c[:, None] * ROWS + y[None, :], mask=taken, other=float("-inf")
        )
        mass = tl.sum(tl.math.exp2(t - shift[None, :]), 1)
        tl.store(out_row + c, mass, mask=c < width)


def tile_lse_launch(group: int, head_dim: int) -> tuple[int, int]:
    """``(heads, num_warps)`` of the first pass: the query heads a program takes (all
    of one KV head's, so each key tile serves them all), the largest of 4, 2, 1
    dividing the group whose probe rows fit a 128 x 128 query tile (two heads' 64 rows
    at head dim 256); 8 warps for 128 rows."""
    most = 128 * 128 // (SEGMENT_PROBE_ROWS * max(head_dim, 128))
    heads = next(n for n in (4, 2, 1) if group % n == 0 and n <= most)
    return heads, 8 if heads * SEGMENT_PROBE_ROWS >= 128 else 4


def segment_block_masses(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    probes: SegmentProbes,
    scale: float,
    q_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[P, Hq, max_k_blocks]`` float32: each probe's mean softmax mass on each key
    block (0 past the keys it sees). ``q_scale``: fp8 queries' scale."""
    P, Hq, D = probes.num_probes, q.shape[1], q.shape[2]
    B, W = plan.block_size, plan.max_k_blocks
    ROWS = SEGMENT_PROBE_ROWS
    group = Hq // kv.num_kv_heads
    heads, warps = tile_lse_launch(group, D)
    # every (head, key block a probe sees, valid probe row) is written
    f32 = dict(dtype=torch.float32, device=q.device)
    tile_lse = torch.empty(Hq, probes.num_tiles, ROWS, **f32)
    _segment_tile_lse_kernel[(Hq // heads, P, cdiv(W, TILES_PER_PROGRAM))](
        q, q.stride(0), q.stride(1), q_scale, *kv.key_args(),
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        probes.request, probes.last, probes.stride, probes.count, probes.first_tile,
        tile_lse, tile_lse.stride(0), scale * math.log2(math.e), group,
        PAGED=kv.paged, PAGE_SIZE=kv.page_size, HEAD_DIM=D,
        BLOCK_D=triton.next_power_of_2(D), BLOCK=B, ROWS=ROWS, HEADS=heads,
        TILES_PER_PROGRAM=TILES_PER_PROGRAM, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=warps,
    )  # fmt: skip
    masses = torch.empty(P, Hq, W, **f32)
    _segment_masses_kernel[(Hq, P)](
        tile_lse, tile_lse.stride(0), probes.last, probes.count, probes.first_tile,
        masses, masses.stride(0), masses.stride(1), W,
        BLOCK=B, ROWS=ROWS, TILE=MASS_TILES, num_warps=4,
    )  # fmt: skip
    return masses
