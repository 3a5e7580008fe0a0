"""The selected density above which the sparse path is slower than FlashAttention's
dense pass: what ``max_density: auto`` (the default) stands for.

A sparse layer call pays the search, then computes each selected block at the
attention kernel's rate; a dense one computes every causal block at FlashAttention's.
So the crossover rises with the context (the search's share of the layer falls) and
depends on

* the kernel: the warp-specialised Hopper kernel computes a 128-token block at about
  FA3's rate, the portable Triton kernel (other GPUs; on Hopper the batches the Hopper
  kernel does not cover: fp8 caches, head sizes other than 128) at about two thirds of
  it, and an fp8 cache at about half of FA3's fp8 rate;
* the blocks' size: at 64 tokens the Hopper kernel runs at ~0.83 of its 128-token rate
  (466 against 560 TF/s at 128K, run 36) and the search has twice the rows;
* the search: ``selection: rerank`` ranks each row's candidates by the exact attention
  of sampled queries, a search 10-30 times the paper's (128K: ~67 ms at 64-token
  blocks, head-wide, against 2.2; run 40), so it pays only at low densities; vsgrid's
  costs 1.05x the paper's and takes the paper's crossovers.

Each value is the lowest crossover in its range of key lengths, with the search's eager
time (its launches included: the case of a host that does not run ahead of the GPU),
rounded down to 0.05 and never above a longer range's (the guard starts a longer length
from a shorter one's sparse density). Measured by ``scripts/bench_breakeven.py`` on an
H100 (one Llama-3.1-8B layer, keys and values in 128-token pages, FA3 dense against the
search plus the block-sparse attention at each density; ``benchmarks/RESULTS.md``,
"Break-even"):

* the paper's search at 128-token blocks (run 43,
  ``benchmarks/results/2026-12-06-run43``): the Hopper kernel 0.49 for a 16K prompt;
  0.80-0.84 for a 32K prompt and the last 16K chunk of one (0.79-0.81 in a second
  run); 0.97 at 64K; 0.89 for a 128K prompt, 0.98 for the last 16K chunk of one; the
  portable kernel the lower of its bf16 crossovers (0.35; 0.55-0.57; 0.66; 0.61-0.66)
  and those estimated for an fp8 cache (0.25; 0.42; 0.51; 0.46: the same curves at run
  9's fp8 rates, our fp8 attention 17% slower than its bf16 and FA3's fp8 9% faster
  than its bf16);
* the other searches and block sizes: **estimated** (not measured): the Hopper
  kernel's from run 43's curves, its rate at 64-token blocks scaled by 0.83 (run 36),
  and the searches' GPU times (rerank head-wide at 64-token blocks: 5.95 ms at 32K,
  run 38, 67.7 ms at 128K, run 40, both H100; per row at 128-token blocks 20.1 ms at
  128K, H200, run 30; the paper's at 64-token blocks twice its time at 128; other
  lengths scaled as rows times keys) plus ~1 ms of launches; the portable kernel's at
  0.53 of the Hopper kernel's, the ratio of the measured paper's; all rounded down to
  0.05 as above.
"""

from __future__ import annotations

# The ranges of key lengths the crossovers are taken over, each by the longest key
# length it holds (None: any longer).
RANGES: tuple[int | None, ...] = (16384, 32768, 65536, None)

# By (the search: "paper" or "rerank"; the blocks' tokens): per range of RANGES, the
# Hopper kernel's crossover and the portable kernel's.
BREAK_EVEN: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("paper", 128): ((0.45, 0.25), (0.75, 0.4), (0.85, 0.45), (0.85, 0.45)),
    ("paper", 64): ((0.35, 0.15), (0.6, 0.3), (0.7, 0.35), (0.7, 0.35)),
    ("rerank", 128): ((0.35, 0.15), (0.7, 0.35), (0.75, 0.35), (0.75, 0.35)),
    ("rerank", 64): ((0.15, 0.05), (0.35, 0.15), (0.5, 0.25), (0.5, 0.25)),
}


def range_of(kv_len: int) -> int:
    """The index in :data:`RANGES` of the range that holds ``kv_len`` keys."""
    return next(
        i for i, longest in enumerate(RANGES) if longest is None or kv_len <= longest
    )


def search_of(selection: str) -> str:
    """Whose search cost a selection mode's break-even follows: rerank's own, else the
    paper's (vsgrid's search costs 1.05x it)."""
    return "rerank" if selection == "rerank" else "paper"


def break_even_density(
    kv_len: int, hopper_kernel: bool, selection: str = "paper", block_size: int = 128
) -> float:
    """The selected share of the causal blocks at which a request of ``kv_len`` keys
    costs as much sparse as dense; ``hopper_kernel``: whether the Hopper attention
    kernel computes its blocks (else the portable one); ``selection``, ``block_size``:
    the config's (the search that selects, the blocks' tokens)."""
    hopper, portable = BREAK_EVEN[search_of(selection), block_size][range_of(kv_len)]
    return hopper if hopper_kernel else portable
