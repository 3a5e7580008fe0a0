"""Where the search's time goes: the probe's scores pass under each launch variant
(``ProbeLaunch``: key blocks per program, probe rows per step, warps), checked
against the default variant's outputs; the budget counts' radix select under each
launch variant (``TopMassLaunch``) and against sorting; and the per-kernel GPU time
of one whole search.

Inputs as in ``bench_kernels.py`` (``common.planted``: one Llama-3.1-8B layer,
planted structure, bf16).
Usage: python scripts/bench_search.py --out DIR [--lengths 32768 131072] [--skip-probe]
Writes DIR/bench_search.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from common import (
    HQ,
    SCALE,
    B,
    D,
    bench,
    length_label,
    paper_config,
    planted,
    run_meta,
)

from vllm_flexprefill.kernels import KVSource, SparsePlan
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.top_mass import TopMassLaunch, top_mass

# ProbeLaunch(blocks_per_program, slab, num_warps, num_stages[, max_registers]); the
# default (registers capped at 128) first. Capped registers fit more programs on an SM
# (four 4-warp programs at 128) and spill little (sm_90 compile: 40 bytes a thread at
# 32-row slabs, 16 at 16-row ones).
PROBE_SETTINGS = (
    [(1, None, 8, 1), (1, 64, 8, 1), (1, 64, 4, 1), (2, 64, 4, 1), (4, 64, 8, 1)]
    + [(1, 32, 4, 1), (2, 32, 4, 1), (8, 32, 4, 1), (4, 32, 4, 2), (1, 16, 4, 1)]
    + [(4, 16, 2, 1), (1, 32, 2, 1), (1, 64, 8, 2), (8, 16, 4, 1)]
    + [(8, 16, 4, 1, 128), (8, 32, 8, 1, 128), (8, 16, 4, 1, 96), (8, 32, 4, 1, 96)]
    + [(8, 16, 8, 1, 96), (8, 16, 4, 1, 160)]
)
VARIANTS = [ProbeLaunch.default(D, quantised=False)]
VARIANTS += [ProbeLaunch(*settings) for settings in PROBE_SETTINGS]
# TopMassLaunch(chunk, tile, num_warps[, num_stages]).
TOP_MASS_SETTINGS = (
    [(8192, 1024, 4), (8192, 1024, 8), (32768, 1024, 8), (16384, 512, 4)]
    + [(8192, 256, 4, 1), (4096, 256, 4), (2048, 256, 4, 2), (32768, 2048, 8)]
    + [(65536, 1024, 8)]
)
TOP_MASS_VARIANTS = [TopMassLaunch(*settings) for settings in TOP_MASS_SETTINGS]


def bench_quick(fn) -> float:
    """Median ms of ``fn()`` under ``do_bench``'s own default warm-up and
    repetitions (25 and 100 ms)."""
    return bench(fn, warmup=25, rep=100)


def probe_sweep(q, kv, plan, baseline) -> list[dict]:
    """The probe's scores pass under each launch variant: time, and the largest
    relative error of its outputs against the default variant's ``baseline``."""
    return [probe_variant(q, kv, plan, baseline, launch) for launch in VARIANTS]


def probe_variant(q, kv, plan, baseline, launch: ProbeLaunch) -> dict:
    """The probe under ``launch``: its time and its error against ``baseline``."""
    n = plan.q_lens[0]
    try:
        got = probe(q, kv, plan, SCALE, launch)
    except Exception as error:  # does not compile or launch (e.g. shared memory)
        print(f"{length_label(n)} {launch}: {error}", flush=True)
        return dict(tokens=n, launch=str(launch), error=str(error))
    error = max(
        relative_error(getattr(got, f), getattr(baseline, f))
        for f in ("tokens", "vertical_blocks", "slash_blocks")
    )
    ms = bench_quick(partial(probe, q, kv, plan, SCALE, launch))
    print(
        f"{length_label(n)} {launch}: {ms:.3f} ms (rel. error vs default {error:.1e})",
        flush=True,
    )
    return dict(tokens=n, launch=str(launch), probe_ms=ms, rel_error_vs_default=error)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def top_mass_sweep(n: int, token_scores: torch.Tensor) -> list[dict]:
    """The budget counts' radix select (``top_mass``) of the probe's
    ``token_scores`` (vertical and slash scores of every head, ``2 * HQ * n``) under
    each launch variant, checked against the default; then the default against
    sorting the same rows (the official way)."""
    token_rows = 2 * HQ
    starts = torch.arange(token_rows, device="cuda", dtype=torch.int64) * n
    lens = torch.full((token_rows,), n, dtype=torch.int32, device="cuda")
    scores = token_scores.view(token_rows, n)
    counts = partial(top_mass, scores, starts, lens, n, 0.9)
    radix_ms = bench_quick(counts)
    baseline = counts()
    rows = [
        top_mass_variant(n, counts, baseline, launch) for launch in TOP_MASS_VARIANTS
    ]
    sort_ms = bench_quick(partial(counts_by_sorting, scores))
    rows.append(dict(tokens=n, top_mass_radix_ms=radix_ms, top_mass_sort_ms=sort_ms))
    print(
        f"{length_label(n)} top-mass of {token_rows} token rows: "
        f"radix {radix_ms:.3f} ms, sort {sort_ms:.3f} ms",
        flush=True,
    )
    return rows


def top_mass_variant(n: int, counts, baseline, launch: TopMassLaunch) -> dict:
    """``counts`` (``top_mass`` but for its launch) under ``launch``: its time, and
    whether it counts as the default launch did (``baseline``)."""
    label = f"{length_label(n)} top-mass {launch}"
    try:
        ms = bench_quick(partial(counts, launch=launch))
        got = counts(launch=launch)
    except Exception as error:  # a variant that does not compile or launch
        message = str(error)[:200]
        print(f"{label}: {message}", flush=True)
        return dict(tokens=n, top_mass_launch=str(launch), error=message)
    same = all(torch.equal(a, b) for a, b in zip(baseline, got, strict=True))
    print(f"{label}: {ms:.3f} ms (same as default: {same})", flush=True)
    return dict(
        tokens=n, top_mass_launch=str(launch), top_mass_ms=ms, same_as_default=same
    )


def counts_by_sorting(scores: torch.Tensor) -> torch.Tensor:
    """Per row of ``scores``, the fewest entries reaching 0.9 of its mass, found by
    sorting."""
    ordered = scores.sort(dim=1, descending=True).values.cumsum(1)
    return torch.searchsorted(ordered, 0.9 * ordered[:, -1:])


def search_profile(q, kv, plan) -> dict:
    """GPU milliseconds per kernel of one whole search (the 12 costliest,
    torch.profiler over 5 searches)."""
    n, config = plan.q_lens[0], paper_config()
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    find_blocks(q, kv, plan, config, SCALE, dense)
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            find_blocks(q, kv, plan, config, SCALE, dense)
        torch.cuda.synchronize()
    per_kernel = {e.key: e.device_time_total / 5 / 1000 for e in prof.key_averages()}
    top = dict(sorted(per_kernel.items(), key=lambda item: -item[1])[:12])
    rounded = {name: round(ms, 3) for name, ms in top.items()}
    print(f"{length_label(n)} search, GPU ms per kernel: " + json.dumps(rounded))
    return dict(tokens=n, search_kernels_ms=top)


def length_rows(n: int, skip_probe: bool) -> list[dict]:
    """The three jobs on one request of ``n`` planted tokens."""
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    baseline = probe(q, kv, plan, SCALE)
    rows = [] if skip_probe else probe_sweep(q, kv, plan, baseline)
    return rows + top_mass_sweep(n, baseline.tokens) + [search_profile(q, kv, plan)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument(
        "--skip-probe",
        action="store_true",
        help="only the top-mass sweep and the search profile",
    )
    args = parser.parse_args()
    rows = []
    for n in args.lengths:
        rows += length_rows(n, args.skip_probe)
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    results = json.dumps(dict(meta=run_meta(), rows=rows), indent=1)
    (args.out / "bench_search.json").write_text(results)


if __name__ == "__main__":
    main()
