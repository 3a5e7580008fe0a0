"""Top-mass selection without sorting: for each row of non-negative scores, the fewest
entries whose sum reaches a fraction of the row total, and the value of the last one.

A radix select on the float32 bit patterns (order-preserving for non-negative floats):
eight passes resolve the threshold's 32 bits four at a time, from the top, one launch
each; a row whose chosen bucket holds a single entry is resolved then, and the later
passes skip it. In a pass, ``_radix_pass_kernel``'s programs (many per row) sum the
mass and count of the entries in the current range per 4-bit bucket; the last of a
row's programs to finish (an atomic ticket) picks the highest bucket at which the
descending cumulative mass reaches the target.
Once the top bits narrow a row's range to few entries, the passes stop reading the
whole row: one pass (``TopMassLaunch.compact_pass``) also copies the entries still in
range, in order, into a compact list of at most ``1 / TopMassLaunch.keep`` of the row
(each program writes after the earlier programs' entries, counted by the previous
pass's partial histograms), and the later passes read that list instead. A row with
more entries in range than that keeps reading itself whole.
The result matches sorting (``reference.top_mass``) up to float rounding at the
boundary; all work stays on the device, with no host synchronisation and no
per-row Python loop.
Rows whose ``active`` flag is off are skipped (count 0, threshold +inf).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

from .utils import aligned

RADIX_BITS = 4
BUCKETS = 1 << RADIX_BITS
# partial histograms the row's last program sums per step (a row of 1M entries has 128)
GATHER = 64


@dataclass(frozen=True)
class TopMassLaunch:
    """Launch parameters of a radix pass (``scripts/bench_search.py`` sweeps them)."""

    chunk: int = 8192  # entries per histogram program
    tile: int = 256  # entries per loop step
    num_warps: int = 4
    num_stages: int = 3
    # the pass that writes the compact lists (from 1; None: rows are always read
    # whole), and their size: at most 1 / keep of the row
    compact_pass: int | None = 2
    keep: int = 8


@triton.jit
def _chunk_histogram(
    source, lo, hi, range_mask, prefix, shift, destination,
    TILE: tl.constexpr, RADIX_BITS: tl.constexpr, WRITE: tl.constexpr,
):  # fmt: skip
    """Per bucket ``[1 << RADIX_BITS]``: the mass (float32) and count (int32) of the
    entries of ``source[lo:hi]`` in range (``bits & range_mask == prefix``), by their
    digit ``bits >> shift``. With ``WRITE``, those entries are also copied, in order,
    to ``destination``."""
    BUCKETS: tl.constexpr = 1 << RADIX_BITS
    j = tl.arange(0, BUCKETS)
    # per-thread partial histograms, reduced across the threads once, after the loop
    tile_mass = tl.zeros([TILE, BUCKETS], tl.float32)
    tile_count = tl.zeros([TILE, BUCKETS], tl.int32)
    for first in range(lo, hi, TILE):
        idx = first + tl.arange(0, TILE)
        x = tl.load(source + idx, mask=idx < hi, other=0.0)
        bits = x.to(tl.int32, bitcast=True)
        in_range = ((bits & range_mask) == prefix) & (idx < hi)
        digit = (bits >> shift) & (BUCKETS - 1)
        hit = (digit[:, None] == j[None, :]) & in_range[:, None]
        tile_mass += tl.where(hit, x[:, None], 0.0)
        tile_count += hit.to(tl.int32)
        if WRITE:
            flags = in_range.to(tl.int32)
            tl.store(destination + tl.cumsum(flags, 0) - 1, x, mask=in_range)
            destination += tl.sum(flags, 0)
    return tl.sum(tile_mass, 0), tl.sum(tile_count, 0)


@triton.jit
def _radix_pass_kernel(
    scores_ptr, row_start_ptr, row_len_ptr, active_ptr, range_mask, shift,
    compact_ptr,  # compact lists: row i's from row_start[i] // KEEP
    kept_ptr,  # [rows] int32: entries in row i's compact list, -1 if it has none
    mass_ptr, count_ptr,  # [rows, chunks, BUCKETS] partial histograms
    prev_count_ptr,  # the previous pass's partial counts (where compact writes go)
    ticket_ptr,  # [rows] int32, zero before the pass: programs of the row done so far
    prefix_ptr, target_ptr,  # [rows] state between passes (target: the fraction first)
    above_mass_ptr, above_count_ptr,
    out_count_ptr, out_threshold_ptr,
    CHUNK: tl.constexpr, TILE: tl.constexpr, RADIX_BITS: tl.constexpr,
    GATHER: tl.constexpr, FIRST: tl.constexpr, LAST: tl.constexpr,
    KEEP: tl.constexpr,  # a compact list holds at most row_len // KEEP entries
    PLAN_COMPACT: tl.constexpr,  # this pass decides which rows get a compact list
    COMPACT: tl.constexpr,  # this pass writes the compact lists
    FROM_COMPACT: tl.constexpr,  # this pass reads them
):  # fmt: skip
    """One radix pass: program ``(row, chunk)`` histograms its chunk of the row (or of
    the row's compact list); the row's last program to finish chooses the bucket (so
    a pass is one launch)."""
    BUCKETS: tl.constexpr = 1 << RADIX_BITS
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    chunks = tl.num_programs(1)
    # inactive, or resolved by an earlier pass (its count written: at least one)
    if (tl.load(active_ptr + row) == 0) | (tl.load(out_count_ptr + row) > 0):
        return
    start = tl.load(row_start_ptr + row)
    length = tl.load(row_len_ptr + row)
    prefix = tl.load(prefix_ptr + row)
    source = scores_ptr + start
    if FROM_COMPACT:
        kept = tl.load(kept_ptr + row)
        if kept >= 0:
            source = compact_ptr + start // KEEP
            length = kept
    lo = chunk * CHUNK
    hi = tl.minimum(lo + CHUNK, length)
    if COMPACT:
        # The entries in range are those the previous pass counted in its chosen
        # bucket: this chunk's go after the earlier chunks'.
        chosen = (prefix >> (shift + RADIX_BITS)) & (BUCKETS - 1)
        before = 0
        for first in range(0, chunk, GATHER):
            ch = first + tl.arange(0, GATHER)
            cell = (row * chunks + ch) * BUCKETS + chosen
            before += tl.sum(tl.load(prev_count_ptr + cell, ch < chunk, 0), 0)
        destination = compact_ptr + start // KEEP + before
        # (the branch outside the loops: a branch inside one stops its pipelining)
        if tl.load(kept_ptr + row) >= 0:
            mass, count = _chunk_histogram(
                source, lo, hi, range_mask, prefix, shift, destination,
                TILE, RADIX_BITS, WRITE=True,
            )  # fmt: skip
        else:
            mass, count = _chunk_histogram(
                source, lo, hi, range_mask, prefix, shift, destination,
                TILE, RADIX_BITS, WRITE=False,
            )  # fmt: skip
    else:
        mass, count = _chunk_histogram(
            source, lo, hi, range_mask, prefix, shift, source,
            TILE, RADIX_BITS, WRITE=False,
        )  # fmt: skip
    j = tl.arange(0, BUCKETS)
    tl.store(mass_ptr + (row * chunks + chunk) * BUCKETS + j, mass)
    tl.store(count_ptr + (row * chunks + chunk) * BUCKETS + j, count)
    tl.debug_barrier()  # every thread's stores precede the ticket (acquire-release)
    if tl.atomic_add(ticket_ptr + row, 1) != chunks - 1:
        return

    # The row's last program: sum the partial histograms, GATHER chunks' at a time
    # (".cg": from L2, not a stale L1).
    hist_mass = tl.zeros([BUCKETS], tl.float32)
    hist_count = tl.zeros([BUCKETS], tl.int32)
    for first in range(0, chunks, GATHER):
        ch = first + tl.arange(0, GATHER)
        cell = (row * chunks + ch)[:, None] * BUCKETS + j[None, :]
        written = (ch < chunks)[:, None]
        part_mass = tl.load(mass_ptr + cell, written, 0.0, cache_modifier=".cg")
        part_count = tl.load(count_ptr + cell, written, 0, cache_modifier=".cg")
        hist_mass += tl.sum(part_mass, 0)
        hist_count += tl.sum(part_count, 0)
    if FIRST:
        target = tl.load(target_ptr + row) * tl.sum(hist_mass, 0)
        above = 0.0
        above_count = 0
        tl.store(target_ptr + row, target)
    else:
        target = tl.load(target_ptr + row)
        above = tl.load(above_mass_ptr + row)
        above_count = tl.load(above_count_ptr + row)
    reach = above + tl.cumsum(
        hist_mass, 0, reverse=True
    )  # mass of entries >= bucket j's range
    has_mass = hist_mass > 0
    best = tl.max(tl.where((reach >= target) & has_mass, j, -1), 0)
    lowest = tl.min(
        tl.where(has_mass, j, BUCKETS), 0
    )  # rounding left the target out of reach
    bucket = tl.where(best >= 0, best, tl.where(lowest < BUCKETS, lowest, 0))
    higher = j > bucket
    above += tl.sum(tl.where(higher, hist_mass, 0.0), 0)
    above_count += tl.sum(tl.where(higher, hist_count, 0), 0)
    prefix = prefix | (bucket << shift)
    tl.store(prefix_ptr + row, prefix)
    tl.store(above_mass_ptr + row, above)
    tl.store(above_count_ptr + row, above_count)
    ties = tl.sum(tl.where(j == bucket, hist_count, 0), 0)
    if PLAN_COMPACT:
        # the next pass copies the entries left in range if they are few enough
        tl.store(kept_ptr + row, tl.where(ties <= length // KEEP, ties, -1))
    if not LAST and ties == 1:
        # One entry left in range: it is the threshold (the bucket's mass is its
        # value), as the remaining passes would find; they skip the row.
        tl.store(out_count_ptr + row, above_count + 1)
        value = tl.sum(tl.where(j == bucket, hist_mass, 0.0), 0)
        tl.store(out_threshold_ptr + row, value)
    if LAST:
        threshold = prefix.to(tl.float32, bitcast=True)
        needed = tl.where(
            threshold > 0, tl.math.ceil((target - above) / threshold), 1.0
        )
        needed = tl.minimum(tl.maximum(needed, 1.0), tl.maximum(ties, 1).to(tl.float32))
        tl.store(out_count_ptr + row, above_count + needed.to(tl.int32))
        tl.store(out_threshold_ptr + row, threshold)


def top_mass(
    scores: torch.Tensor,
    row_start: torch.Tensor,
    row_len: torch.Tensor,
    max_len: int,
    fraction: float | torch.Tensor,
    active: torch.Tensor | None = None,
    launch: TopMassLaunch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of non-negative float32 ``scores`` (any flat storage; zero entries are
    harmless): row ``i`` is
    ``scores.view(-1)[row_start[i] : row_start[i] + row_len[i]]``
    (``row_start`` int64, ``row_len`` int32, ``row_len <= max_len``).

    Returns ``(count [rows] int32, threshold [rows] float32)``: how many of the largest
    entries are needed to reach ``fraction`` of the row's total (one for every row, or
    ``[rows]`` float32), and the value of the last one needed. ``active [rows]`` bool
    skips rows (count 0, threshold +inf); without it, rows of length 0 are skipped.
    """
    rows, length = row_start.shape[0], max_len
    dev = scores.device
    # the kernels index them
    row_start, row_len = row_start.contiguous(), row_len.to(torch.int32).contiguous()
    # row_len: any nonzero int
    active = row_len if active is None else active.to(torch.int8).contiguous()
    passes = 32 // RADIX_BITS
    launch = launch or TopMassLaunch()
    compact_pass = launch.compact_pass
    if compact_pass is not None and not 0 < compact_pass < passes:
        raise ValueError(
            f"TopMassLaunch.compact_pass={compact_pass}: must be None or in "
            f"1..{passes - 1} (the pass before it plans the lists)"
        )
    # int32 state: count, prefix, count above, compact list lengths (-1: none), one
    # ticket row per pass; float32 state: threshold, target, mass above. Rows padded
    # so that every view is aligned.
    padded = aligned(rows)
    state = torch.zeros(4 + passes, padded, dtype=torch.int32, device=dev)[:, :rows]
    count, prefix, above_count, kept = state[0], state[1], state[2], state[3]
    tickets = state[4:]
    kept.fill_(-1)
    real = torch.full((3, padded), float("inf"), dtype=torch.float32, device=dev)
    real = real[:, :rows]
    threshold, target, above_mass = real[0], real[1], real[2]
    if rows == 0 or length == 0:
        return count, threshold
    # the first pass turns each row's fraction into its target mass
    target.copy_(fraction) if torch.is_tensor(fraction) else target.fill_(fraction)
    chunks = cdiv(length, launch.chunk)
    mass = torch.empty(rows, chunks, BUCKETS, dtype=torch.float32, device=dev)
    # partial counts, alternating between passes (the compacting pass reads the
    # previous pass's)
    hits = torch.empty(2, rows, chunks, BUCKETS, dtype=torch.int32, device=dev)
    compact_len = scores.numel() // launch.keep + 1 if compact_pass else 1
    compact = torch.empty(compact_len, dtype=torch.float32, device=dev)
    for p in range(passes):
        shift = 32 - RADIX_BITS * (p + 1)
        resolved = RADIX_BITS * p  # top bits already fixed in `prefix`
        # int32 mask of those bits
        range_mask = (-(1 << (32 - resolved))) if resolved else 0
        _radix_pass_kernel[(rows, chunks)](
            scores, row_start, row_len, active, range_mask, shift,
            compact, kept,
            mass, hits[p % 2], hits[(p + 1) % 2], tickets[p],
            prefix, target, above_mass, above_count,
            count, threshold,
            CHUNK=launch.chunk, TILE=launch.tile, RADIX_BITS=RADIX_BITS,
            GATHER=GATHER, FIRST=p == 0, LAST=p == passes - 1, KEEP=launch.keep,
            PLAN_COMPACT=compact_pass is not None and p == compact_pass - 1,
            COMPACT=p == compact_pass,
            FROM_COMPACT=compact_pass is not None and p > compact_pass,
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )  # fmt: skip
    return count, threshold
