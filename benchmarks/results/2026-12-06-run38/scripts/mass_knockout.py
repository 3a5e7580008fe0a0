"""Run 38: what bounds rerank's sampled-mass kernel (`_sampled_mass_kernel`, ~78 ms of
head-wide rerank's 91 ms search at 128K)? Knock-out copies of the ``kernels/`` package
(made by ``mass_variants.py``), each loaded beside the installed one as
``scripts/search_ab.py`` loads them, and each one's search profiled on the 128K planted
layer (64-token blocks, γ 0.938, head-wide budget, contiguous K/V): GPU ms per kernel
(``search_ab.kernel_times``, 5 searches). Only the sampled-mass kernel's time is
meaningful for a knock-out (its masses are wrong, so the cut after it differs).
Usage (GPU machine, ``scripts/`` on the path):
    python mass_knockout.py OUT_DIR NAME=DIR ..."""

import json
import sys
from functools import partial
from pathlib import Path

import torch
from common import Layer, planted, run_meta, vsgrid_config
from search_ab import kernel_times, load_kernels

import vllm_flexprefill.kernels.search as installed_search
from vllm_flexprefill.kernels import SparsePlan

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
versions = {"installed": installed_search}
for spec in sys.argv[2:]:
    name, _, directory = spec.partition("=")
    versions[name] = load_kernels(name, Path(directory).resolve())
n = 131072
config = vsgrid_config(0.938, "rerank", 64).with_overrides({"rerank_budget": "head"})
q, k, v = planted(n, seed=n)
kv = Layer(q, k, v, [n], fp8=False).kv(None)
plan = SparsePlan.build([n], [n], 64, "cuda")
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
rows = {}
for name, module in versions.items():
    find = partial(module.find_blocks, q, kv, plan, config, q.shape[2] ** -0.5, dense)
    rows[name] = kernel_times(find)
    print(name, json.dumps(rows[name]), flush=True)
result = dict(meta=run_meta(versions=sys.argv[2:]), rows=rows)
(out_dir / "mass_knockout.json").write_text(json.dumps(result, indent=1))
