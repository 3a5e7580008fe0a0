"""The ``rank``-th largest of a set of non-negative float32 values, exactly, by a radix
select over their bit patterns (which order as the values do), most significant digit
first: each pass histograms the next ``DIGIT_BITS`` bits of the values whose higher
digits are the ones chosen so far (:func:`digit_counts`), and chooses the digit at which
the values above it reach the rank (:func:`choose_digit`). ``32 / DIGIT_BITS`` passes,
each reading the values once.

The values are rows of a 2-D array: row ``g`` holds its ``count_row[g]`` first entries
from ``values + g * stride``; a set is rows ``first_row .. first_row + rows - 1``.
:func:`select_bits` runs every pass in one program; a caller may instead spread one
pass over several programs and add their counts up (``rerank.py``'s head-wide bound).
"""

from __future__ import annotations

import triton
import triton.language as tl

DIGIT_BITS = 8  # the bits of the values' patterns a pass histograms: four passes


@triton.jit
def digit_counts(
    values, stride, count_row, first_row, rows, chosen, shift,
    ROWS: tl.constexpr, TILE: tl.constexpr, DIGIT_BITS: tl.constexpr,
):  # fmt: skip
    """``[2 ** DIGIT_BITS]`` int32: how many of the set's values whose bit pattern's
    digits above bit ``shift + DIGIT_BITS`` are ``chosen`` have each value of the
    ``DIGIT_BITS`` bits from ``shift`` (``ROWS x TILE`` values a step)."""
    BINS: tl.constexpr = 1 << DIGIT_BITS
    flat = tl.arange(0, ROWS * TILE)
    row, col = flat // TILE, flat % TILE
    counts = tl.zeros([BINS], tl.int32)
    for first_g in range(0, rows, ROWS):
        g = first_row + first_g + row
        n = tl.load(count_row + g, mask=first_g + row < rows, other=0)
        row_at = values + g.to(tl.int64) * stride
        for first in range(0, tl.max(n, 0), TILE):
            c = first + col
            listed = c < n
            bits = tl.load(row_at + c, mask=listed, other=0.0)
            bits = bits.to(tl.int32, bitcast=True)
            if shift + DIGIT_BITS < 32:  # the values under the chosen digits
                listed &= (bits >> (shift + DIGIT_BITS)) == chosen
            digit = (bits >> shift) & (BINS - 1)
            counts += tl.histogram(digit, BINS, mask=listed)
    return counts


@triton.jit
def choose_digit(counts, chosen, above, enough, rank, DIGIT_BITS: tl.constexpr):
    """One pass's choice: from the pass's ``counts`` (:func:`digit_counts`), the
    digits ``chosen`` so far (one more, appended), the values ``above`` every one with
    those digits, and whether ``rank`` values exist at all (``enough``). Returns the
    three updated."""
    # at_or_above[d]: values of the chosen digits whose next digit is d or more
    at_or_above = tl.sum(counts, 0) - tl.cumsum(counts, 0) + counts
    # the largest digit whose values and those above reach the rank (-1: none)
    best = tl.sum((above + at_or_above >= rank).to(tl.int32), 0) - 1
    enough &= best >= 0
    digits = tl.arange(0, 1 << DIGIT_BITS)
    above += tl.sum(tl.where(digits > best, counts, 0), 0)
    chosen = (chosen << DIGIT_BITS) | tl.maximum(best, 0)
    return chosen, above, enough


@triton.jit
def select_bits(
    values, stride, count_row, first_row, rows, rank,
    ROWS: tl.constexpr, TILE: tl.constexpr, DIGIT_BITS: tl.constexpr,
):  # fmt: skip
    """``(bits, enough)``: the bit pattern (int32) of the set's ``rank``-th largest
    value, and whether the set holds ``rank`` values (``rank`` >= 1; if not, ``bits``
    is meaningless)."""
    tl.static_assert(32 % DIGIT_BITS == 0, "whole digits of a 32-bit pattern")
    chosen = tl.zeros([], tl.int32)  # the digits chosen so far
    above = tl.zeros([], tl.int32)  # values above every one with those digits
    enough = tl.full([], 1, tl.int1)
    for shift in tl.static_range(32 - DIGIT_BITS, -1, -DIGIT_BITS):
        counts = digit_counts(
            values, stride, count_row, first_row, rows, chosen, shift,
            ROWS, TILE, DIGIT_BITS,
        )  # fmt: skip
        chosen, above, enough = choose_digit(
            counts, chosen, above, enough, rank, DIGIT_BITS
        )
    return chosen, enough
