"""Where the search's time goes: the probe's scores pass under each launch variant
(``ProbeLaunch``: key blocks per program, probe rows per step, warps), checked against
the default variant's outputs; the budget counts' radix select under each launch variant
(``TopMassLaunch``) and against sorting; and the per-kernel GPU time of one whole search.

Inputs as in ``bench_kernels.py`` (one Llama-3.1-8B layer, planted structure, bf16).
Usage: python scripts/bench_search.py --out DIR [--lengths 32768 131072] [--skip-probe]
Writes DIR/bench_search.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import triton
from bench_kernels import B, HQ, SCALE, paper_config, planted

from vllm_flexprefill.kernels import KVSource, SparsePlan
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.top_mass import TopMassLaunch, top_mass

VARIANTS = [ProbeLaunch(), ProbeLaunch(1, None, 8, 1), ProbeLaunch(1, 64, 8, 1), ProbeLaunch(1, 64, 4, 1),
            ProbeLaunch(2, 64, 4, 1), ProbeLaunch(4, 64, 8, 1), ProbeLaunch(1, 32, 4, 1), ProbeLaunch(2, 32, 4, 1),
            ProbeLaunch(8, 32, 4, 1), ProbeLaunch(4, 32, 4, 2), ProbeLaunch(1, 16, 4, 1), ProbeLaunch(4, 16, 2, 1),
            ProbeLaunch(1, 32, 2, 1), ProbeLaunch(1, 64, 8, 2)]

TOP_MASS_VARIANTS = [TopMassLaunch(8192, 1024, 4), TopMassLaunch(8192, 1024, 8), TopMassLaunch(32768, 1024, 8),
                     TopMassLaunch(16384, 512, 4), TopMassLaunch(8192, 256, 4, 1), TopMassLaunch(4096, 256, 4),
                     TopMassLaunch(2048, 256, 4, 2), TopMassLaunch(32768, 2048, 8), TopMassLaunch(65536, 1024, 8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--skip-probe", action="store_true", help="only the top-mass sweep and the search profile")
    args = parser.parse_args()
    rows = []
    for n in args.lengths:
        q, k, v = planted(n, seed=n)
        plan = SparsePlan.build([n], [n], B, "cuda")
        kv = KVSource(k, v)
        baseline = probe(q, kv, plan, SCALE)
        for launch in [] if args.skip_probe else VARIANTS:
            try:
                got = probe(q, kv, plan, SCALE, launch)
            except Exception as error:  # a variant that does not compile or launch (e.g. out of shared memory)
                rows.append(dict(tokens=n, launch=str(launch), error=str(error)))
                print(f"{n // 1024}K {launch}: {error}", flush=True)
                continue
            error = max(((getattr(got, f) - getattr(baseline, f)).norm() / getattr(baseline, f).norm()).item()
                        for f in ("tokens", "vertical_blocks", "slash_blocks"))
            ms = triton.testing.do_bench(lambda: probe(q, kv, plan, SCALE, launch), return_mode="median")
            rows.append(dict(tokens=n, launch=str(launch), probe_ms=ms, rel_error_vs_default=error))
            print(f"{n // 1024}K {launch}: {ms:.3f} ms (rel. error vs default {error:.1e})", flush=True)
        # Budget counts: the radix select against sorting the same rows (the official way).
        token_rows = 2 * HQ  # vertical and slash scores of every head
        rows_ = torch.arange(token_rows, device="cuda", dtype=torch.int64) * n
        lens = torch.full((token_rows,), n, dtype=torch.int32, device="cuda")
        scores = baseline.tokens.view(token_rows, n)
        radix_ms = triton.testing.do_bench(lambda: top_mass(scores, rows_, lens, n, 0.9), return_mode="median")
        baseline_counts = top_mass(scores, rows_, lens, n, 0.9)
        for launch in TOP_MASS_VARIANTS:
            try:
                ms = triton.testing.do_bench(lambda: top_mass(scores, rows_, lens, n, 0.9, launch=launch),
                                             return_mode="median")
                same = all(torch.equal(a, b) for a, b in zip(baseline_counts, top_mass(scores, rows_, lens, n, 0.9,
                                                                                        launch=launch)))
                rows.append(dict(tokens=n, top_mass_launch=str(launch), top_mass_ms=ms, same_as_default=same))
                print(f"{n // 1024}K top-mass {launch}: {ms:.3f} ms (same as default: {same})", flush=True)
            except Exception as error:  # a variant that does not compile or launch
                rows.append(dict(tokens=n, top_mass_launch=str(launch), error=str(error)[:200]))
                print(f"{n // 1024}K top-mass {launch}: {str(error)[:200]}", flush=True)

        def by_sorting():
            ordered = scores.sort(dim=1, descending=True).values.cumsum(1)
            return torch.searchsorted(ordered, 0.9 * ordered[:, -1:])

        sort_ms = triton.testing.do_bench(by_sorting, return_mode="median")
        rows.append(dict(tokens=n, top_mass_radix_ms=radix_ms, top_mass_sort_ms=sort_ms))
        print(f"{n // 1024}K top-mass of {token_rows} token rows: radix {radix_ms:.3f} ms, sort {sort_ms:.3f} ms", flush=True)
        config = paper_config()
        dense = torch.zeros(1, dtype=torch.bool, device="cuda")
        find_blocks(q, kv, plan, config, SCALE, dense)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                find_blocks(q, kv, plan, config, SCALE, dense)
            torch.cuda.synchronize()
        per_kernel = {e.key: e.device_time_total / 5 / 1000 for e in prof.key_averages()}
        top = dict(sorted(per_kernel.items(), key=lambda kv_: -kv_[1])[:12])
        rows.append(dict(tokens=n, search_kernels_ms=top))
        print(f"{n // 1024}K search, GPU ms per kernel: " + json.dumps({k_: round(v_, 3) for k_, v_ in top.items()}))
        del q, k, v
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(date=time.strftime("%Y-%m-%d"), gpu=torch.cuda.get_device_name(), git=os.environ.get("GIT_REV"))
    (args.out / "bench_search.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
