"""The vsgrid probes (``selection: vsgrid``): each request's chunk is cut into segments
of query blocks (``ChunkGeometry.segments``); a segment's probe, up to
``SEGMENT_PROBE_ROWS`` strided queries of its last query block
(``ChunkGeometry.segment_probe``), attends causally to the keys up to each query's
position, and the softmax is reduced on the fly to the probe's mean mass on each key
block. Never stored: ``P [rows, keys]``.

Two passes per (query head, probe):

1. ``_segment_lse_kernel`` (split over key ranges, for parallelism): each probe row's
   running max and sum per split, combined into the row's log-sum-exp by a few torch
   ops on the device;
2. ``_segment_masses_kernel`` (a few key blocks per program): recomputes each key
   block's probabilities and sums them; each (probe, head, key block) is written by one
   program.

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
from .utils import aligned, dot_precision

SPLIT_TOKENS = 8192  # keys per program in the log-sum-exp pass
BLOCKS_PER_PROGRAM = 8  # key blocks per program in the masses pass


@dataclass(frozen=True)
class SegmentProbes:
    """The batch's vsgrid probes (requests in order, then segments in order) and the
    probe each query block reads. Positions are absolute within the request's
    sequence."""

    request: torch.Tensor  # [P] int32
    last: torch.Tensor  # [P] int32, the probe's last query
    stride: torch.Tensor  # [P] int32, between its queries
    count: torch.Tensor  # [P] int32, its queries (<= SEGMENT_PROBE_ROWS)
    row_probe: torch.Tensor  # [T] int64: the probe of global query block t
    # [T] int64: a_e - a_t, the probe's query block minus t's (absolute indices)
    row_shift: torch.Tensor
    last_probe: torch.Tensor  # [R] int64: each request's last probe (its chunk's end)

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
        for i, (q_len, kv_len) in enumerate(
            zip(plan.q_lens, plan.kv_lens, strict=True)
        ):
            geo = ChunkGeometry(q_len, kv_len, plan.block_size)
            for first, last in geo.segments(SEGMENTS):
                row_probe += [len(probes)] * (last + 1 - first)
                row_shift += [last - row for row in range(first, last + 1)]
                probes.append((i, *geo.segment_probe(last, SEGMENT_PROBE_ROWS)))
            last_probe.append(len(probes) - 1)
        dev = plan.kv_len.device
        # one row per field, each starting 16-byte aligned (see ``utils.aligned``)
        table = torch.zeros(4, aligned(len(probes)), dtype=torch.int32)
        table[:, : len(probes)] = torch.tensor(probes, dtype=torch.int32).T
        columns = table.to(dev)[:, : len(probes)]
        as_long = lambda x: torch.tensor(x, dtype=torch.int64).to(dev)  # noqa: E731
        return cls(
            *columns, as_long(row_probe), as_long(row_shift), as_long(last_probe)
        )


@triton.jit
def _probe_program(
    q_ptr, stride_qt, stride_qh, q_scale_ptr, stride_kh, table_ptr, stride_table,
    k_scale_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    probe_request, probe_last, probe_stride, probe_count,
    h, p, d, d_ok, scale_log2, group, ROWS: tl.constexpr,
):  # fmt: skip
    """What a program of (query head ``h``, probe ``p``) reads first: the probe's
    queries (padded to ROWS rows), their positions and validity, its row count; its
    request's first key row, block-table row and KV head offset; the softmax scale
    (base 2) with the fp8 scales folded in."""
    req = tl.load(probe_request + p)
    count = tl.load(probe_count + p)
    y = tl.arange(0, ROWS)
    row_ok = y < count
    pos = tl.load(probe_last + p) - tl.load(probe_stride + p) * (count - 1 - y)
    context = tl.load(req_kv_len + req) - tl.load(req_q_len + req)
    rows = (tl.load(req_q_start + req) + pos - context).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + h * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kv_h = (h // group) * stride_kh
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    return q, pos, row_ok, count, k_start, table_row_ptr, kv_h, scale_log2


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_table"])
def _segment_lse_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    probe_request, probe_last, probe_stride, probe_count,
    max_ptr, sum_ptr, stride_m_p, stride_m_h, stride_m_s,  # [P, Hq, splits, ROWS]
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    p = tl.program_id(1)
    split = tl.program_id(2)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q, pos, row_ok, count, k_start, table_row_ptr, kv_h, scale_log2 = _probe_program(
        q_ptr, stride_qt, stride_qh, q_scale_ptr, stride_kh, table_ptr, stride_table,
        k_scale_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
        probe_request, probe_last, probe_stride, probe_count,
        h, p, d, d_ok, scale_log2, group, ROWS,
    )  # fmt: skip
    end = tl.load(probe_last + p) + 1  # keys the probe sees
    m_i = tl.full([ROWS], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    for start in range(split * SPLIT, tl.minimum((split + 1) * SPLIT, end), BLOCK):
        keys = start + tl.arange(0, BLOCK)
        key_ok = keys < end
        k = load_key_tile(
            k_ptr, kv_h, keys, key_ok, k_start, table_row_ptr, stride_kp, stride_ks,
            d, d_ok, PAGED, PAGE_SIZE,
        )  # fmt: skip
        s = query_key_products(q, k, DOT_PRECISION) * scale_log2
        s = tl.where(
            key_ok[None, :] & (keys[None, :] <= pos[:, None]), s, float("-inf")
        )
        m_i, l_i = running_max_and_sum(m_i, l_i, s)
    y = tl.arange(0, ROWS)
    at = p.to(tl.int64) * stride_m_p + h * stride_m_h + split * stride_m_s + y
    tl.store(max_ptr + at, m_i)
    tl.store(sum_ptr + at, l_i)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_table", "stride_out_p", "stride_out_h"])
def _segment_masses_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    probe_request, probe_last, probe_stride, probe_count,
    lse_ptr, stride_lse_p, stride_lse_h,  # [P, Hq, ROWS], base 2
    out_ptr, stride_out_p, stride_out_h,  # [P, Hq, max_k_blocks]
    scale_log2, group,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr, BLOCKS_PER_PROGRAM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    p = tl.program_id(1)
    first = tl.program_id(2) * BLOCKS_PER_PROGRAM
    end = tl.load(probe_last + p) + 1
    if first * BLOCK >= end:
        return
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q, pos, row_ok, count, k_start, table_row_ptr, kv_h, scale_log2 = _probe_program(
        q_ptr, stride_qt, stride_qh, q_scale_ptr, stride_kh, table_ptr, stride_table,
        k_scale_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
        probe_request, probe_last, probe_stride, probe_count,
        h, p, d, d_ok, scale_log2, group, ROWS,
    )  # fmt: skip
    # log2(count) folds the mean over the probe's rows into the exponent
    y = tl.arange(0, ROWS)
    shift = tl.load(
        lse_ptr + p * stride_lse_p + h * stride_lse_h + y, mask=row_ok, other=0.0
    ) + tl.log2(count.to(tl.float32))
    out_row = out_ptr + p.to(tl.int64) * stride_out_p + h * stride_out_h
    for c in range(first, tl.minimum(first + BLOCKS_PER_PROGRAM, tl.cdiv(end, BLOCK))):
        keys = c * BLOCK + tl.arange(0, BLOCK)
        key_ok = keys < end
        k = load_key_tile(
            k_ptr, kv_h, keys, key_ok, k_start, table_row_ptr, stride_kp, stride_ks,
            d, d_ok, PAGED, PAGE_SIZE,
        )  # fmt: skip
        s = query_key_products(q, k, DOT_PRECISION)
        prob = tl.math.exp2(s * scale_log2 - shift[:, None])
        seen = row_ok[:, None] & key_ok[None, :] & (keys[None, :] <= pos[:, None])
        tl.store(out_row + c, tl.sum(tl.sum(tl.where(seen, prob, 0.0), 1), 0))


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
    B, dev = plan.block_size, q.device
    f32 = dict(dtype=torch.float32, device=dev)
    splits = cdiv(plan.max_kv_len, SPLIT_TOKENS)
    ROWS = SEGMENT_PROBE_ROWS
    args = (
        q, q.stride(0), q.stride(1), q_scale, *kv.key_args(),
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        probes.request, probes.last, probes.stride, probes.count,
    )  # fmt: skip
    common = dict(
        PAGED=kv.paged,
        PAGE_SIZE=kv.page_size,
        HEAD_DIM=D,
        BLOCK_D=triton.next_power_of_2(D),
        BLOCK=B,
        ROWS=ROWS,
        DOT_PRECISION=dot_precision(q.dtype),
        num_warps=4,
    )
    scale_log2 = scale * math.log2(math.e)
    group = Hq // kv.num_kv_heads
    row_max = torch.full((P, Hq, splits, ROWS), float("-inf"), **f32)
    row_sum = torch.zeros(P, Hq, splits, ROWS, **f32)
    _segment_lse_kernel[(Hq, P, splits)](
        *args, row_max, row_sum, *row_max.stride()[:3], scale_log2, group,
        SPLIT=SPLIT_TOKENS, **common,
    )  # fmt: skip
    # Splits past a probe's keys left -inf and 0: they add nothing.
    top = row_max.amax(2, keepdim=True).clamp(min=torch.finfo(torch.float32).min)
    lse = (top + (row_sum * torch.exp2(row_max - top)).sum(2, keepdim=True).log2())[
        :, :, 0
    ]
    masses = torch.zeros(P, Hq, plan.max_k_blocks, **f32)
    _segment_masses_kernel[(Hq, P, cdiv(plan.max_k_blocks, BLOCKS_PER_PROGRAM))](
        *args, lse, lse.stride(0), lse.stride(1),
        masses, masses.stride(0), masses.stride(1), scale_log2, group,
        BLOCKS_PER_PROGRAM=BLOCKS_PER_PROGRAM, **common,
    )  # fmt: skip
    return masses
