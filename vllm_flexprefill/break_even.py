"""The selected density above which the sparse path is slower than FlashAttention's
dense pass: what ``max_density: auto`` (the default) stands for.

A sparse layer call pays the search, then computes each selected block at the
attention kernel's rate; a dense one computes every causal block at FlashAttention's.
So the crossover rises with the context (the search's share of the layer falls) and
depends on the kernel: the warp-specialised Hopper kernel computes a block at about
FA3's rate, the portable Triton kernel (other GPUs; on Hopper the batches the Hopper
kernel does not cover: fp8 caches, head sizes other than 128) at about two thirds of it,
and an fp8 cache at about half of FA3's fp8 rate.

Each value is the lowest crossover in its range of key lengths, with the search's eager
time (its launches included: the case of a host that does not run ahead of the GPU),
rounded down to 0.05 and never above a longer range's (the guard starts a longer length
from a shorter one's sparse density). Measured by ``scripts/bench_breakeven.py`` on an
H100 (run 43, ``benchmarks/results/2026-12-06-run43``: one Llama-3.1-8B layer, keys and
values in 128-token pages, FA3 dense against the search plus the block-sparse attention
at each density; ``benchmarks/RESULTS.md``, "Break-even"):

* the Hopper kernel: 0.49 for a 16K prompt; 0.80-0.84 for a 32K prompt and the last 16K
  chunk of one (0.79-0.81 in a second run); 0.97 at 64K; 0.89 for a 128K prompt, 0.98
  for the last 16K chunk of one;
* the portable kernel: the lower of its bf16 crossovers (0.35; 0.55-0.57; 0.66;
  0.61-0.66) and those estimated for an fp8 cache (0.25; 0.42; 0.51; 0.46: the same
  curves at run 9's fp8 rates, our fp8 attention 17% slower than its bf16 and FA3's
  fp8 9% faster than its bf16).
"""

from __future__ import annotations

# (longest key length of the range, or None: any longer; the Hopper kernel's
# crossover; the portable kernel's)
BREAK_EVEN: tuple[tuple[int | None, float, float], ...] = (
    (16384, 0.45, 0.25),
    (32768, 0.75, 0.4),
    (65536, 0.85, 0.45),
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
