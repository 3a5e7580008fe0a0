"""Run 38: run 33's ``attention_ab.py`` as the serving path launches the kernel, without
a log-sum-exp (``lse`` None: the kernel's ``WRITE_LSE`` off), 8 interleaved rounds. The
installed kernel against copies of the ``kernels/`` package (NAME=DIR). The versions at
the ends of the list (the installed one first, the last NAME) ran up to 4% slower at
γ 0.9 than those in the middle in run 38: compare copies given between two others (run
38's ``-copies-*`` runs: main=, tma=, hoist=).
Usage (GPU machine, run 33's scripts and ``scripts/`` on the path): [GAMMAS="0.9 0.95"]
[PAGES="0 128 16"] python attention_ab_serving.py OUT_DIR NAME=DIR [...]"""

import json
import math
import sys
from functools import partial
from pathlib import Path

import torch
from ab_common import attention_module, cases, rel
from common import SCALE, computed_flops, interleaved, run_meta

from vllm_flexprefill.kernels import hopper_attention

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
versions = {"installed": hopper_attention}
for spec in sys.argv[2:]:
    name, _, directory = spec.partition("=")
    versions[name] = attention_module(name, Path(directory).resolve())
rows = []
for gamma, page, q, kv, plan, found in cases():
    flops = computed_flops(found, q.shape[2])
    fns, outs = {}, {}
    for name, module in versions.items():
        o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
        fn = partial(
            module.hopper_sparse_attention, q, kv, plan, found.kv_index,
            found.kv_count, SCALE * math.log2(math.e), o, None, module.HopperLaunch(),
        )  # fmt: skip
        fn()
        torch.cuda.synchronize()
        fns[name], outs[name] = fn, o
    ms = interleaved(fns, rounds=8, warmup=10, rep=120)
    row = dict(gamma=gamma, page=page, density_pairs=int(found.kv_count.sum()))
    for name in versions:
        row[name] = dict(
            ms=ms[name], tflops=flops / ms[name] / 1e9,
            rel_out=rel(outs[name], outs["installed"]),
            nan=bool(outs[name].isnan().any()),
        )  # fmt: skip
    print(json.dumps(row), flush=True)
    rows.append(row)
(out_dir / "attention_ab_serving.json").write_text(
    json.dumps(dict(meta=run_meta(versions=sys.argv[2:]), rows=rows), indent=1)
)
