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
  and the search has twice the rows;
* the search: ``selection: rerank`` ranks each row's candidates (twice its count) by
  the exact attention of sampled queries, a search 10-30 times the paper's that grows
  with the density (128K at 64-token blocks, head-wide: 60 ms at 12% against 202 ms
  selecting every block), so it pays only at low densities, and at 64-token blocks
  not at all up to 16K keys; vsgrid's search costs 1.05x the paper's and takes the
  paper's crossovers.

Each value is the lowest crossover in its range of key lengths, with the search's eager
time (its launches included: the case of a host that does not run ahead of the GPU),
the search's time at each density linear between its planted inputs' and its diffuse
ones' (``bench_breakeven.py``), rounded down to 0.05 and never above a longer range's
(the guard starts a longer length from a shorter one's sparse density); 0 where the
sparse path never pays (the guard runs those layers dense without probing). The
portable kernel's value is the lower of its bf16 and its fp8 crossovers (it computes
both caches; FA3's fp8 pass is as fast as its bf16 one, our fp8 ~15% slower than our
bf16). Measured by ``scripts/bench_breakeven.py`` on an H100 (one Llama-3.1-8B layer,
keys and values in 128-token pages, FA3 dense against the search plus the
block-sparse attention at each density; ``benchmarks/RESULTS.md``, "Break-even"):
run 43 (``benchmarks/results/2026-12-06-run43``: the paper's search at 128-token blocks,
bf16), run 48 (``benchmarks/results/2026-12-07-run48``: the paper's fp8; the paper's
at 64-token blocks and rerank's at 128 and at 64 head-wide, bf16; the first and the
last with an fp8 cache) and run 50 (``benchmarks/results/2026-12-07-run50``: rerank's at
64 head-wide again, bf16 and fp8, and rerank's fp8 at 128, each search under
``max_density`` 1, its density its own). Where two runs measured a row, the lower
crossover of the two.
"""

from __future__ import annotations

# The ranges of key lengths the crossovers are taken over, each by the longest key
# length it holds (None: any longer).
RANGES: tuple[int | None, ...] = (16384, 32768, 65536, None)

# By (the search: "paper" or "rerank"; the blocks' tokens): per range of RANGES, the
# Hopper kernel's crossover and the portable kernel's.
BREAK_EVEN: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("paper", 128): ((0.45, 0.3), (0.75, 0.45), (0.85, 0.5), (0.85, 0.5)),
    ("paper", 64): ((0.4, 0.1), (0.55, 0.25), (0.6, 0.3), (0.6, 0.3)),
    ("rerank", 128): ((0.25, 0.15), (0.6, 0.35), (0.6, 0.45), (0.6, 0.45)),
    ("rerank", 64): ((0.0, 0.0), (0.3, 0.15), (0.3, 0.2), (0.3, 0.2)),
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
