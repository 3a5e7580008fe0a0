"""Run 34: branch hopper-persistent's kernel (one program an SM, work items claimed
from an atomic counter) against the installed kernel in SM cycles a computed pair, as
run 33's ``cycles_ab.py`` counts them: the installed kernel through ``cycles.py``'s
instrumentation (each program's cycles from its start to its output), the persistent
one with its own ``CYCLES`` switch (each work item's cycles since the consumer's
previous output, the program's start for the first), so both sums are the SMs' busy
cycles up to each program's last output. Cases as ``ab_common.cases`` (``GAMMAS``,
``PAGES``); ``RUNS`` runs each, alternating. Times and outputs: ``attention_ab.py OUT
persistent=DIR``.
Usage (GPU machine, run 33's scripts on PYTHONPATH): python persistent_cycles.py
OUT_DIR DIR (DIR: the branch's kernels/ copy)"""

import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from ab_common import attention_module, cases, instrumented_module, rel
from common import SCALE, B, run_meta
from cycles import instrumented

import vllm_flexprefill.kernels as installed_kernels

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
scratch = Path(tempfile.mkdtemp())
installed_dir = Path(installed_kernels.__file__).parent
versions = {
    "installed": instrumented_module("cyc_installed", installed_dir, scratch, instrumented),
    "persistent": attention_module("persistent", Path(sys.argv[2]).resolve()),
}
versions["persistent"].CYCLES = True
runs = int(os.environ.get("RUNS", "5"))
rows = []
for gamma, page, q, kv, plan, found in cases():
    pairs = found.kv_count.sum().item()
    cycles = {name: [] for name in versions}
    outs = {}
    for i in range(runs):
        for name in list(versions) if i % 2 == 0 else list(versions)[::-1]:
            module = versions[name]
            o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
            lse = torch.full(q.shape[:2], float("nan"), device="cuda")
            module.hopper_sparse_attention(
                q, kv, plan, found.kv_index, found.kv_count,
                SCALE * math.log2(math.e), o, lse, module.HopperLaunch(),
            )  # fmt: skip
            torch.cuda.synchronize()
            cycles[name].append(lse.double().sum().item() / B / pairs)
            outs[name] = o
    row = dict(gamma=gamma, page=page, pairs=pairs)
    for name in versions:
        median = statistics.median(cycles[name])
        row[name] = dict(
            cycles_per_pair=median,
            spread=(max(cycles[name]) - min(cycles[name])) / median,
            rel_out=rel(outs[name], outs["installed"]),
            nan=bool(outs[name].isnan().any()),
        )  # fmt: skip
    print(json.dumps(row), flush=True)
    rows.append(row)
(out_dir / "persistent_cycles.json").write_text(
    json.dumps(dict(meta=run_meta(versions=sys.argv[2:]), rows=rows), indent=1)
)
