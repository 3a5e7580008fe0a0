"""The installed search against other versions of its kernels, side by side in one
process: each ``NAME=DIR`` names a copy of the ``kernels/`` package (for instance a
branch's, from ``git archive BRANCH kernels | tar -x -C DIR/..``), loaded beside the
installed one as ``vllm_flexprefill.kernels_NAME``.

Per length, page size and selection (the paper's γ 0.9, vsgrid's γ 0.96 without a
minimum budget, as ``bench_kernels.py`` runs them): each version's whole search timed in
four interleaved rounds (order alternating, the H200 being power-capped), its block
counts, block lists and patterns compared with the installed version's; at the
contiguous layout, each version's GPU time per kernel (torch profiler, 5 searches).
Inputs as in ``bench_kernels.py`` (``common.planted``: one Llama-3.1-8B layer, bf16).

Usage: python scripts/search_ab.py --out DIR NAME=DIR [NAME=DIR ...]
           [--lengths 32768 131072] [--pages 0 128] [--selections paper vsgrid]
Writes DIR/search_ab.json (one row per case, as printed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import torch
from common import (
    B,
    Layer,
    interleaved,
    paper_config,
    planted,
    run_meta,
    vsgrid_config,
)

import vllm_flexprefill.kernels.search as installed_search
from vllm_flexprefill.kernels import SparsePlan

MAIN = "installed"
CONFIGS = {"paper": lambda: paper_config(0.9), "vsgrid": lambda: vsgrid_config(0.96)}


def load_kernels(name: str, directory: Path):
    """The ``search`` module of the kernel package copy in ``directory``."""
    package = f"vllm_flexprefill.kernels_{name}"
    spec = importlib.util.spec_from_file_location(
        package, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.search")


def listed(found) -> torch.Tensor:
    """The block lists with the entries past each count as -1."""
    width = found.kv_index.shape[-1]
    keep = torch.arange(width, device="cuda") < found.kv_count[..., None]
    return torch.where(keep, found.kv_index, -1)


def kernel_times(find) -> dict:
    """GPU ms per kernel of one search (``find()``): their sum and the 12 costliest
    (torch ops' own entries left out: their kernels are counted)."""
    find()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            find()
        torch.cuda.synchronize()
    times = {
        e.key[:60]: e.device_time_total / 5e3
        for e in prof.key_averages()
        if not e.key.startswith("aten::")
    }
    costliest = sorted(times.items(), key=lambda item: -item[1])[:12]
    return dict(sum=sum(times.values()), **{k: round(v, 4) for k, v in costliest})


def compare(versions: dict, q, kv, plan, selection: str, label: dict) -> dict:
    """One case: every version's search against the installed one's."""
    config = CONFIGS[selection]()
    dense = torch.zeros(plan.num_requests, dtype=torch.bool, device="cuda")
    args = (q, kv, plan, config, q.shape[2] ** -0.5, dense)
    finds = {name: partial(m.find_blocks, *args) for name, m in versions.items()}
    found = {name: find() for name, find in finds.items()}
    main = found[MAIN]
    row = dict(label, selection=selection, pairs=int(main.kv_count.sum()))
    for name, other in found.items():
        if name != MAIN:
            row[name] = dict(
                counts_equal=bool(torch.equal(other.kv_count, main.kv_count)),
                differing_rows=int((listed(other) != listed(main)).any(-1).sum()),
                patterns_equal=bool(torch.equal(other.pattern, main.pattern)),
                pairs=int(other.kv_count.sum()),
            )
    row["search_ms"] = interleaved(finds, rounds=4, warmup=10, rep=100)
    if label["page"] is None:
        row["kernels_ms"] = {name: kernel_times(find) for name, find in finds.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="NAME=DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--pages", type=int, nargs="+", default=[0, 128])
    parser.add_argument(
        "--selections", nargs="+", choices=list(CONFIGS), default=list(CONFIGS)
    )
    args = parser.parse_args()
    versions = {MAIN: installed_search}
    for spec in args.versions:
        name, _, directory = spec.partition("=")
        if not name.isidentifier() or not directory or name == MAIN:
            parser.error(f"version {spec!r}: expected NAME=DIR with NAME an identifier")
        versions[name] = load_kernels(name, Path(directory).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.lengths:
        q, k, v = planted(n, seed=n)
        layer = Layer(q, k, v, [n], fp8=False)
        plan = SparsePlan.build([n], [n], B, "cuda")
        for page in args.pages:
            kv = layer.kv(page or None)
            for selection in args.selections:
                label = dict(tokens=n, page=page or None)
                rows.append(compare(versions, q, kv, plan, selection, label))
                print(json.dumps(rows[-1]), flush=True)
        del q, k, v, layer
        torch.cuda.empty_cache()
    result = dict(meta=run_meta(versions=args.versions), rows=rows)
    (args.out / "search_ab.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
