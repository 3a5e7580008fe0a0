"""Each head's pattern, by FlexPrefill's test (``reference.is_query_aware``): the probe
queries' mean against the key-block means, softmaxed over the request's key blocks,
is compared with the probe's own block masses by Jensen-Shannon distance; a head under
``tau`` is query-aware.

Programs ``(query head, request, split)`` each take ``SPLIT`` key blocks: their logits
(the mean against the block means) go to a scratch row, with the split's maximum and
sum of exponentials; the row's last program to finish (an atomic ticket) combines
them and reads the row back for the three entropies of ``JS = H((p + q) / 2) - (H(p)
+ H(q)) / 2`` (natural log), then writes the head's flags for the rest of the search
(:class:`HeadFlags`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

from .utils import aligned_parts

SPLIT = 32  # key blocks per program
ROW_TILE = 256  # entries per step of the last program's pass over the row
GATHER = 64  # splits per step of the last program's combine


@triton.jit
def _entropy_terms(x):
    """``-x ln x`` (0 at 0), elementwise, for ``x >= 0``."""
    return tl.where(x > 0, -x * tl.log(tl.where(x > 0, x, 1.0)), 0.0)


@triton.jit
def _store_flags(
    query_aware, vsgrid, dense, query_aware_ptr, from_grid_ptr, rows_ptr, row, plane
):
    """A head's :class:`HeadFlags` at ``row`` (``plane``: R x Hq), from whether it is
    query-aware and its request selects by vsgrid or runs dense (boolean scalars)."""
    tl.store(query_aware_ptr + row, query_aware)
    tl.store(from_grid_ptr + row, (query_aware | vsgrid) & ~dense)
    tl.store(rows_ptr + row, ~query_aware & ~vsgrid)
    tl.store(rows_ptr + plane + row, ~query_aware & ~vsgrid)
    tl.store(rows_ptr + 2 * plane + row, query_aware & ~vsgrid)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["width", "stride_kr", "stride_kh", "stride_mr", "stride_mh"]
)
def _pattern_kernel(
    mean_ptr, stride_pr, stride_ph,  # [R, Hq, D] float32: the probe queries' mean
    kmean_ptr, stride_kr, stride_kh, stride_kc,  # [R, Hkv, width, D] float32
    masses_ptr, stride_mr, stride_mh,  # [R, Hq, width] float32: probe block masses
    key_blocks_ptr,  # [R] int: each request's key blocks
    tau_ptr, dense_ptr, vsgrid_ptr,  # [R] float32, int8, int8
    logits_ptr,  # [R, Hq, width] float32 scratch
    partial_ptr,  # [R, Hq, splits, 2] float32 scratch: each split's maximum and sum
    ticket_ptr,  # [R, Hq] int32, zero before the launch: the row's programs done
    query_aware_ptr, from_grid_ptr, rows_ptr,  # int8 outputs (HeadFlags)
    width, scale, group,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr,
    ROW_TILE: tl.constexpr, GATHER: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    req = tl.program_id(1)
    split = tl.program_id(2)
    splits = tl.num_programs(2)
    row = req * tl.num_programs(0) + h
    plane = tl.num_programs(0) * tl.num_programs(1)
    vsgrid = tl.load(vsgrid_ptr + req) != 0
    dense = tl.load(dense_ptr + req) != 0
    if dense:
        if split == 0:
            # not query-aware, no grid; its token rows' top mass runs as for any head
            never = tl.zeros_like(vsgrid)
            _store_flags(never, vsgrid, dense, query_aware_ptr, from_grid_ptr,
                         rows_ptr, row, plane)  # fmt: skip
        return
    blocks = tl.load(key_blocks_ptr + req)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    pm = tl.load(mean_ptr + req * stride_pr + h * stride_ph + d, mask=d_ok, other=0.0)
    k_base = kmean_ptr + req.to(tl.int64) * stride_kr + (h // group) * stride_kh
    logits_row = logits_ptr + row.to(tl.int64) * width
    partial = partial_ptr + (row.to(tl.int64) * splits + split) * 2

    c = split * SPLIT + tl.arange(0, SPLIT)
    ok = c < blocks
    km = tl.load(k_base + c[:, None] * stride_kc + d[None, :],
                 mask=ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    logits = tl.where(ok, tl.sum(km * pm[None, :], 1) * scale, float("-inf"))
    tl.store(logits_row + c, logits, mask=c < width)
    top = tl.max(logits, 0)
    top = tl.where(top == float("-inf"), 0.0, top)  # a split past the keys
    tl.store(partial, top)
    tl.store(partial + 1, tl.sum(tl.exp(logits - top), 0))
    tl.debug_barrier()  # every thread's stores precede the ticket (acquire-release)
    if tl.atomic_add(ticket_ptr + row, 1) != splits - 1:
        return

    # The row's last program: the softmax's maximum and sum from the splits', then
    # the entropies (".cg": the other programs' stores, from L2).
    m_i = tl.full([], float("-inf"), tl.float32)
    l_i = tl.full([], 0.0, tl.float32)
    for first in range(0, splits, GATHER):
        sp = first + tl.arange(0, GATHER)
        cell = partial_ptr + (row.to(tl.int64) * splits + sp) * 2
        tops = tl.load(cell, sp < splits, float("-inf"), cache_modifier=".cg")
        sums = tl.load(cell + 1, sp < splits, 0.0, cache_modifier=".cg")
        m_new = tl.maximum(m_i, tl.max(tops, 0))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(sums * tl.exp(tops - m_new), 0)
        m_i = m_new
    m_base = masses_ptr + req.to(tl.int64) * stride_mr + h * stride_mh
    h_p = tl.zeros([ROW_TILE], tl.float32)
    h_q = tl.zeros([ROW_TILE], tl.float32)
    h_m = tl.zeros([ROW_TILE], tl.float32)
    for first in range(0, width, ROW_TILE):
        column = first + tl.arange(0, ROW_TILE)
        in_row = column < width
        stored = tl.load(
            logits_row + column, in_row, float("-inf"), cache_modifier=".cg"
        )
        p = tl.exp(stored - m_i) / l_i
        q = tl.load(m_base + column, mask=in_row, other=0.0)
        h_p += _entropy_terms(p)
        h_q += _entropy_terms(q)
        h_m += _entropy_terms((p + q) / 2)
    divergence = tl.sum(h_m, 0) - (tl.sum(h_p, 0) + tl.sum(h_q, 0)) / 2
    distance = tl.sqrt(tl.maximum(divergence, 0.0))
    query_aware = distance < tl.load(tau_ptr + req)
    _store_flags(
        query_aware, vsgrid, dense, query_aware_ptr, from_grid_ptr, rows_ptr, row, plane
    )


@dataclass
class HeadFlags:
    """Per (request, query head), int8: views of one buffer, each at a 16-byte
    boundary."""

    query_aware: torch.Tensor  # [R, Hq]: never for a request that runs dense
    # [R, Hq]: reads the grid: query-aware, or any head of a vsgrid request (not dense)
    from_grid: torch.Tensor
    # [3, R, Hq]: the top-mass rows to run (search.SearchLayout.row_start's first
    # three runs): the vertical and slash token rows (paper requests, heads not
    # query-aware), the grid rows (query-aware heads of paper requests)
    top_mass_rows: torch.Tensor


def head_patterns(
    probe_mean: torch.Tensor,
    key_means: torch.Tensor,
    probe_masses: torch.Tensor,
    key_blocks: torch.Tensor,
    tau: torch.Tensor,
    dense: torch.Tensor,
    vsgrid: torch.Tensor,
    scale: float,
) -> HeadFlags:
    """``probe_mean [R, Hq, D]``, ``key_means [R, Hkv, W, D]`` (entries past a
    request's ``key_blocks [R]`` unread), ``probe_masses [R, Hq, W]`` (float32, 0 past
    the request's key blocks), ``tau [R]`` float32, ``dense`` and ``vsgrid [R]`` bool
    or int8 (see the module docstring)."""
    R, Hq, D = probe_mean.shape
    Hkv, W = key_means.shape[1], key_means.shape[2]
    rows = R * Hq
    top_mass_rows, query_aware, from_grid = aligned_parts(
        [3 * rows, rows, rows], torch.int8, probe_mean.device
    )
    result = HeadFlags(
        query_aware.view(R, Hq), from_grid.view(R, Hq), top_mass_rows.view(3, R, Hq)
    )
    if R == 0:
        return result
    splits = cdiv(W, SPLIT)
    # zeroed: the logits, the splits' maxima and sums, the tickets
    logits, partial, tickets = aligned_parts(
        [rows * W, rows * splits * 2, rows], torch.float32, probe_mean.device, True
    )
    _pattern_kernel[(Hq, R, splits)](
        probe_mean, probe_mean.stride(0), probe_mean.stride(1),
        key_means, key_means.stride(0), key_means.stride(1), key_means.stride(2),
        probe_masses, probe_masses.stride(0), probe_masses.stride(1),
        key_blocks, tau, dense.to(torch.int8), vsgrid.to(torch.int8),
        logits, partial, tickets.view(torch.int32), result.query_aware,
        result.from_grid, result.top_mass_rows, W, scale, Hq // Hkv,
        HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), SPLIT=SPLIT,
        ROW_TILE=ROW_TILE, GATHER=GATHER, num_warps=4,
    )  # fmt: skip
    return result
