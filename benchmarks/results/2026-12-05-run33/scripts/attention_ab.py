"""Run 33: the installed Gluon attention kernel against other versions of it, side by
side in one process. Each NAME=DIR names a copy of the ``kernels/`` package (a branch's,
``git archive BRANCH kernels``), loaded as ``vllm_flexprefill.kernels_NAME`` as
``scripts/search_ab.py`` loads them. 128K planted layer (``common.planted``), the paper's
γ 0.9 and 0.95, contiguous and 128-/16-token pages: each version's output and LSE
compared with the installed one's, then timed interleaved (order alternating).
Usage (GPU machine): [GAMMAS="0.9 0.95"] python attention_ab.py OUT_DIR NAME=DIR [...]"""

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
        lse = torch.full(q.shape[:2], float("nan"), device="cuda")
        fn = partial(
            module.hopper_sparse_attention, q, kv, plan, found.kv_index,
            found.kv_count, SCALE * math.log2(math.e), o, lse, module.HopperLaunch(),
        )  # fmt: skip
        fn()
        torch.cuda.synchronize()
        fns[name], outs[name] = fn, (o, lse)
    ms = interleaved(fns, rounds=4, warmup=10, rep=120)
    row = dict(gamma=gamma, page=page, density_pairs=int(found.kv_count.sum()))
    for name in versions:
        o, lse = outs[name]
        row[name] = dict(
            ms=ms[name], tflops=flops / ms[name] / 1e9,
            rel_out=rel(o, outs["installed"][0]),
            max_lse_diff=(lse - outs["installed"][1]).abs().max().item(),
            nan=bool(o.isnan().any() or lse.isnan().any()),
        )  # fmt: skip
    print(json.dumps(row), flush=True)
    rows.append(row)
(out_dir / "attention_ab.json").write_text(
    json.dumps(dict(meta=run_meta(versions=sys.argv[2:]), rows=rows), indent=1)
)
