"""The vsgrid selection's estimate and per-row thresholds (``selection: vsgrid``):
``reference.vsgrid_estimate`` and ``reference.top_mass`` with its budget clamp, for
every request of a batch at once.

Row ``t`` (global query block, absolute index ``a_t``) reads its segment's probe
masses ``m`` (``segment_probe.py``) as a vertical and as a slash,
``m[c] + m[c + a_e - a_t]`` for ``c <= a_t`` (``a_e``: the probe's query block; so
``c + a_e - a_t <= a_e`` stays inside the probe's keys), normalised over the row, and
mixes that with the pooled query-aware grid already in the row: ``(1 - w) read + w
grid``, ``w`` its request's head's pooled weight. The weights come first, one program
per (request, head) (``reference.pooled_weights``): each segment's probe row is held
out, the next segment's probe read there and the grid's row predict its masses, and
of ``POOLED_WEIGHTS`` candidates in ``[MIN_POOLED_WEIGHT, 1]`` the one with the
largest log-likelihood wins. Then the estimate, one program per (query block, head).

The threshold of a row of ``n`` entries is the largest value ``t`` for which the
entries ``>= t`` hold ``gamma`` of the row's mass and number at least ``low``, or
number at least ``high``: the value of the ``count``-th largest entry, ``count`` the
fewest entries reaching ``gamma`` clamped to ``[low, high]``. Both conditions only
weaken as ``t`` falls, so a bisection over the float32 bit patterns (ordered as the
values, for non-negative floats) finds it exactly in 31 steps, the row read from the
cache each step. For ``selection: rerank`` a second bisection finds each row's
candidate threshold, the value of its ``RERANK_WIDTH`` x count-th largest entry.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_flexprefill.selection import (
    LIKELIHOOD_FLOOR,
    MIN_POOLED_WEIGHT,
    POOLED_WEIGHTS,
)

from .plan import SparsePlan
from .segment_probe import SegmentProbes

ROW_TILE = 1024  # key blocks per loop step (one step per row up to 128K tokens)
WEIGHT_TILE = 256  # key blocks per step of the weights' [POOLED_WEIGHTS, tile] sums
BISECTION_STEPS = 31  # the bits of a non-negative float32 below the sign


@triton.jit
def _read_normaliser(probe_row, shift, last, TILE: tl.constexpr):
    """1 / the sum over ``c <= last`` of a probe's read ``m[c] + m[c + shift]`` (the
    sum kept at least the smallest normal float32)."""
    total = tl.zeros([], tl.float32)
    for first in range(0, last + 1, TILE):
        c = first + tl.arange(0, TILE)
        causal = c <= last
        vertical = tl.load(probe_row + c, mask=causal, other=0.0)
        slash = tl.load(probe_row + c + shift, mask=causal, other=0.0)
        total += tl.sum(vertical + slash, 0)
    return 1.0 / tl.maximum(total, 1.1754943508222875e-38)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["num_rows", "width"])
def _pooled_weight_kernel(
    grid_ptr,  # [Hq, T, width] float32: the pooled grid
    masses_ptr,  # [P, Hq, width] float32: the probes' block masses
    probe_last_ptr, probe_block_ptr,  # [P] int32: last query, global query block
    last_probe_ptr,  # [R] int64: each request's last probe
    vsgrid_ptr,  # [R] int8: requests of vsgrid selection (the others are skipped)
    weight_ptr,  # [R, Hq] float32 out
    num_rows, width, block_size, min_weight, floor,
    TILE: tl.constexpr, WEIGHTS: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    h = tl.program_id(1)
    num_heads = tl.num_programs(1)
    if tl.load(vsgrid_ptr + r) == 0:
        return
    last_probe = tl.load(last_probe_ptr + r)
    first_probe = tl.where(r > 0, tl.load(last_probe_ptr + tl.maximum(r - 1, 0)) + 1, 0)
    candidates = tl.arange(0, WEIGHTS).to(tl.float32)
    weight = min_weight + (1.0 - min_weight) * candidates / (WEIGHTS - 1)
    likelihood = tl.zeros([WEIGHTS], tl.float32)
    # each probe's row held out, predicted by the next probe's read and the grid
    for p in range(first_probe, last_probe):
        row = tl.load(probe_last_ptr + p) // block_size  # a_i, absolute
        shift = tl.load(probe_last_ptr + p + 1) // block_size - row
        # masses hold a few rows per request: int32 offsets
        held_out = masses_ptr + (p * num_heads + h) * width
        next_row = held_out + num_heads * width
        block = tl.load(probe_block_ptr + p).to(tl.int64)
        grid_row = grid_ptr + (h.to(tl.int64) * num_rows + block) * width
        inverse = _read_normaliser(next_row, shift, row, TILE)
        for first in range(0, row + 1, TILE):
            c = first + tl.arange(0, TILE)
            causal = c <= row
            vertical = tl.load(next_row + c, mask=causal, other=0.0)
            slash = tl.load(next_row + c + shift, mask=causal, other=0.0)
            pooled = tl.load(grid_row + c, mask=causal, other=0.0)
            truth = tl.load(held_out + c, mask=causal, other=0.0)
            mix = (1.0 - weight[:, None]) * ((vertical + slash) * inverse)[
                None, :
            ] + weight[:, None] * pooled[None, :]
            likelihood += tl.sum(truth[None, :] * tl.log(mix + floor), 1)
    best = tl.argmax(likelihood, 0, tie_break_left=True)
    chosen = min_weight + (1.0 - min_weight) * best.to(tl.float32) / (WEIGHTS - 1)
    tl.store(weight_ptr + r * num_heads + h, chosen)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["num_rows", "width"])
def _vsgrid_estimate_kernel(
    grid_ptr,  # [Hq, T, width] float32: the pooled grid in, the estimate out
    masses_ptr,  # [P, Hq, width] float32: the probes' block masses
    row_probe_ptr, row_shift_ptr,  # [T] int64: the row's probe, a_e - a_t
    block_row_ptr,  # [T] int32: a_t
    block_request_ptr,  # [T] int32: the row's request
    weight_ptr,  # [R, Hq] float32: each request's heads' pooled weights
    vsgrid_ptr,  # [R] int8: requests of vsgrid selection (the others are left)
    num_rows, width,
    TILE: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)
    num_heads = tl.num_programs(1)
    request = tl.load(block_request_ptr + t)
    if tl.load(vsgrid_ptr + request) == 0:
        return
    last = tl.load(block_row_ptr + t)  # the last causal key block
    shift = tl.load(row_shift_ptr + t)
    probe_row = masses_ptr + (tl.load(row_probe_ptr + t) * num_heads + h) * width
    grid_row = grid_ptr + (h.to(tl.int64) * num_rows + t) * width
    weight = tl.load(weight_ptr + request * num_heads + h)
    read_weight = (1.0 - weight) * _read_normaliser(probe_row, shift, last, TILE)
    for first in range(0, width, TILE):
        c = first + tl.arange(0, TILE)
        causal = c <= last
        vertical = tl.load(probe_row + c, mask=causal, other=0.0)
        slash = tl.load(probe_row + c + shift, mask=causal, other=0.0)
        pooled = tl.load(grid_row + c, mask=c < width, other=0.0)
        estimate = weight * pooled + (vertical + slash) * read_weight
        tl.store(grid_row + c, estimate, mask=c < width)


@triton.jit
def _mass_and_count_from(row_ptr, first_tile, length, bound, TILE: tl.constexpr):
    """Mass and number of the row's entries ``>= bound``; ``first_tile`` holds its
    first TILE entries (0 past ``length``), the rest are read."""
    taken = first_tile >= bound
    mass = tl.sum(tl.where(taken, first_tile, 0.0), 0)
    count = tl.sum(taken.to(tl.int32), 0)
    for first in range(TILE, length, TILE):
        c = first + tl.arange(0, TILE)
        x = tl.load(row_ptr + c, mask=c < length, other=0.0)
        taken = (x >= bound) & (c < length)
        mass += tl.sum(tl.where(taken, x, 0.0), 0)
        count += tl.sum(taken.to(tl.int32), 0)
    return mass, count


@triton.jit
def _largest_bound(
    row_ptr, first_tile, length, target, low, high,
    STEPS: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """The largest value ``t`` (by bisection over the non-negative float32 bit
    patterns) for which the row's entries ``>= t`` hold ``target`` of its mass and
    number at least ``low``, or number at least ``high``."""
    taken_bits = tl.zeros([], tl.int32)  # every entry is >= 0 (taken)
    beyond_bits = tl.full([], 0x7F800000, tl.int32)  # nothing is >= +inf
    for _ in range(STEPS):
        middle = taken_bits + (beyond_bits - taken_bits) // 2
        bound = middle.to(tl.float32, bitcast=True)
        mass, count = _mass_and_count_from(row_ptr, first_tile, length, bound, TILE)
        enough = ((mass >= target) & (count >= low)) | (count >= high)
        taken_bits = tl.where(enough, middle, taken_bits)
        beyond_bits = tl.where(enough, beyond_bits, middle)
    return taken_bits.to(tl.float32, bitcast=True)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["num_rows", "width"])
def _row_threshold_kernel(
    grid_ptr,  # [Hq, T, width] float32, non-negative
    active_ptr,  # [Hq, T] int8: rows to threshold (the others get +inf)
    length_ptr, gamma_ptr, low_ptr, high_ptr,  # [T]: entries, fraction, count clamp
    threshold_ptr,  # [Hq, T] float32
    widen_ptr,  # [T] int32, with CANDIDATES: candidates per kept entry
    candidate_ptr,  # [Hq, T] float32 out, with CANDIDATES
    count_ptr,  # [Hq, T] int32 out, with CANDIDATES: the entries >= the threshold
    num_rows, width,
    TILE: tl.constexpr, STEPS: tl.constexpr, CANDIDATES: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)
    row = h.to(tl.int64) * num_rows + t
    if tl.load(active_ptr + row) == 0:
        tl.store(threshold_ptr + row, float("inf"))
        if CANDIDATES:
            tl.store(candidate_ptr + row, float("inf"))
            tl.store(count_ptr + row, 0)
        return
    length = tl.load(length_ptr + t)
    row_ptr = grid_ptr + row * width
    c = tl.arange(0, TILE)
    first_tile = tl.load(row_ptr + c, mask=c < length, other=0.0)
    total, _ = _mass_and_count_from(row_ptr, first_tile, length, 0.0, TILE)
    threshold = _largest_bound(
        row_ptr, first_tile, length, tl.load(gamma_ptr + t) * total,
        tl.load(low_ptr + t), tl.load(high_ptr + t), STEPS, TILE,
    )  # fmt: skip
    tl.store(threshold_ptr + row, threshold)
    if CANDIDATES:
        _, count = _mass_and_count_from(row_ptr, first_tile, length, threshold, TILE)
        wide = tl.minimum(count * tl.load(widen_ptr + t), length)
        candidate = _largest_bound(
            row_ptr, first_tile, length, 0.0, wide, wide, STEPS, TILE
        )
        tl.store(candidate_ptr + row, candidate)
        tl.store(count_ptr + row, count)


def _thresholds(grid, active, length, gamma, low, high, widen):
    Hq, T, W = grid.shape
    threshold = torch.empty(Hq, T, dtype=torch.float32, device=grid.device)
    candidate = torch.empty_like(threshold) if widen is not None else threshold
    count = torch.empty(Hq, T, dtype=torch.int32, device=grid.device)
    if T:
        _row_threshold_kernel[(T, Hq)](
            grid, active.to(torch.int8).contiguous(), length, gamma, low, high,
            threshold, length if widen is None else widen, candidate, count, T, W,
            TILE=ROW_TILE, STEPS=BISECTION_STEPS, CANDIDATES=widen is not None,
        )  # fmt: skip
    return threshold, candidate, count


def row_thresholds(
    grid: torch.Tensor,
    active: torch.Tensor,
    length: torch.Tensor,
    gamma: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """``[Hq, T]`` float32: per row of ``grid [Hq, T, W]`` (its first ``length [T]``
    int32 entries), the value of its ``count``-th largest entry, ``count`` the fewest
    entries reaching ``gamma [T]`` float32 of the row's mass clamped to ``[low,
    high]`` (``[T]`` int32; ``1 <= low <= high <= length``); +inf where ``active [Hq,
    T]`` is off."""
    return _thresholds(grid, active, length, gamma, low, high, None)[0]


def candidate_thresholds(
    grid: torch.Tensor,
    active: torch.Tensor,
    length: torch.Tensor,
    gamma: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    widen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`row_thresholds` for ``selection: rerank``: ``(candidate [Hq, T] float32,
    count [Hq, T] int32)``, ``count`` the row's entries at or above its threshold and
    ``candidate`` the value of its ``min(widen x count, length)``-th largest entry
    (``widen [T]`` int32; 1 gives the threshold itself); +inf and 0 where ``active``
    is off."""
    _, candidate, count = _thresholds(grid, active, length, gamma, low, high, widen)
    return candidate, count


def pooled_weights(
    grid: torch.Tensor,
    masses: torch.Tensor,
    probes: SegmentProbes,
    plan: SparsePlan,
    vsgrid: torch.Tensor,
) -> torch.Tensor:
    """``[R, Hq]`` float32: the weights of the pooled grid ``grid [Hq, T, W]`` in the
    vsgrid estimate of each request of ``vsgrid [R]`` (bool; the other requests' rows
    are left unset), from the probes' ``masses [P, Hq, W]``
    (``reference.pooled_weights``)."""
    Hq, T, W = grid.shape
    weight = torch.empty(plan.num_requests, Hq, dtype=torch.float32, device=grid.device)
    _pooled_weight_kernel[(plan.num_requests, Hq)](
        grid, masses, probes.last, probes.block, probes.last_probe, vsgrid, weight,
        T, W, plan.block_size, MIN_POOLED_WEIGHT, LIKELIHOOD_FLOOR, TILE=WEIGHT_TILE,
        WEIGHTS=POOLED_WEIGHTS,
    )  # fmt: skip
    return weight


def vsgrid_estimate_into(
    grid: torch.Tensor,
    masses: torch.Tensor,
    probes: SegmentProbes,
    plan: SparsePlan,
    vsgrid: torch.Tensor,
) -> None:
    """Turn the rows of the requests of ``vsgrid [R]`` (bool) in ``grid [Hq, T, W]``,
    the pooled query-aware grid of every head, into the vsgrid estimate (0 above the
    diagonal), in place, from the probes' ``masses [P, Hq, W]``."""
    Hq, T, W = grid.shape
    if T == 0:
        return
    vsgrid = vsgrid.to(torch.int8)
    weight = pooled_weights(grid, masses, probes, plan, vsgrid)
    _vsgrid_estimate_kernel[(T, Hq)](
        grid, masses, probes.row_probe, probes.row_shift, plan.block_row,
        plan.block_request, weight, vsgrid, T, W, TILE=ROW_TILE,
    )  # fmt: skip
