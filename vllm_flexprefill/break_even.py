"""The selected density above which the sparse path is slower than FlashAttention's
dense pass: what ``max_density: auto`` (the default) stands for.

A sparse layer call pays the search, then computes each selected block at the
attention kernel's rate; a dense one computes every causal block at FlashAttention's.
So the crossover rises with the context (the search's share of the layer falls) and
depends on the kernel: the warp-specialised Hopper kernel computes a block at about
FA3's rate, the portable Triton kernel (other GPUs; on Hopper the batches the Hopper
kernel does not cover: fp8 caches, head sizes other than 128) at about two thirds of it,
and an fp8 cache at about half of FA3's fp8 rate.

Each value is the lowest crossover measured (or, marked, estimated) in its range of key
lengths, rounded down to 0.05 (``scripts/bench_breakeven.py``: one Llama-3.1-8B layer,
keys and values in 128-token pages, FA3 dense against the search plus the block-sparse
attention at each density; ``benchmarks/RESULTS.md``, "Break-even").
"""

from __future__ import annotations

# (longest key length of the range, or None: any longer; the Hopper kernel's
# crossover; the portable kernel's)
BREAK_EVEN: tuple[tuple[int | None, float, float], ...] = (
    (16384, 0.45, 0.35),
    (32768, 0.75, 0.4),
    (65536, 0.75, 0.4),
    (None, 0.85, 0.45),
)


def break_even_density(kv_len: int, hopper_kernel: bool) -> float:
    """The selected share of the causal blocks at which a request of ``kv_len`` keys
    costs as much sparse as dense; ``hopper_kernel``: whether the Hopper attention
    kernel computes its blocks (else the portable one)."""
    crossovers = next(
        (hopper, portable)
        for longest, hopper, portable in BREAK_EVEN
        if longest is None or kv_len <= longest
    )
    return crossovers[0] if hopper_kernel else crossovers[1]
