"""Host (CPU) time of one FlexPrefill forward against its GPU time: below ~64K tokens
the GPU waits for the launches, so the host time is what a chunk pays.

Per length: the enqueue time of ``flex_prefill_forward`` (the GPU idle and
synchronised before each call, so no launch waits for a full queue), its GPU time
(``do_bench``), and a cProfile of 20 forwards (the Python functions where the host
time goes). Inputs as in ``bench_kernels.py`` (``common.planted``).

Usage: python scripts/profile_host.py --out DIR
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from pathlib import Path

import torch
from common import SCALE, B, bench, length_label, paper_config, planted

from vllm_flexprefill.kernels import KVSource, SparsePlan, flex_prefill_forward


def host_ms(forward) -> float:
    """Median enqueue time in ms of ``forward()`` over 30 calls, the GPU idle before
    each."""
    host = []
    for _ in range(30):
        torch.cuda.synchronize()
        start = time.perf_counter()
        forward()
        host.append((time.perf_counter() - start) * 1e3)
    return statistics.median(host)


def cprofile_table(forward) -> str:
    """cProfile of 20 calls of ``forward()``: the 40 Python functions of most own
    time."""
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        forward()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
    return text.getvalue()


def length_row(n: int, out_dir: Path) -> dict:
    """Host and GPU time of one forward over ``n`` planted tokens; writes its
    cProfile table."""
    q, k, v = planted(n, seed=n)
    plan = SparsePlan.build([n], [n], B, "cuda")
    kv, config, out = KVSource(k, v), paper_config(), torch.empty_like(q)
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")

    def forward():
        flex_prefill_forward(q, kv, plan, config, SCALE, dense, out)

    forward()
    host = host_ms(forward)
    gpu = bench(forward, warmup=25, rep=100)
    (out_dir / f"cprofile_{length_label(n)}.txt").write_text(cprofile_table(forward))
    return dict(tokens=n, host_ms=host, forward_ms=gpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    lengths = [8192, 32768, 131072]
    parser.add_argument("--lengths", type=int, nargs="+", default=lengths)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.lengths:
        rows.append(length_row(n, args.out))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "profile_host.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
