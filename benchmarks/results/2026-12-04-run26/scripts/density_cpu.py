"""Density of each selection on the planted inputs at long lengths (CPU reference,
float32, no truth). Usage: python density_cpu.py TOKENS SPEC... (specs as recall_cpu.py)."""
import json, sys, time
import torch
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import reference as R
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.synthetic import planted_qkv
import sys as _s; _s.path.insert(0, '../../2026-12-04-run24/scripts')
import adaptive as A
import xval as X

torch.set_num_threads(1)
n = int(sys.argv[1])
q, k, v, _ = planted_qkv(n, 32, 8, 128, 128, seed=n)
geo = ChunkGeometry(n, n, 128); causal = geo.causal_block_mask()
for spec in sys.argv[2:]:
    t = time.time()
    mode, gamma, *opt = spec.split(":")
    opts = {a: json.loads(b) for a, b in (o.split("=") for o in (opt[0].split(",") if opt else []))}
    cfg = FlexPrefillConfig(gamma=float(gamma), tau=0.1, block_size=128, dense_threshold=0,
                            min_budget=1 if mode in ("vsgrid", "xval") else 1024,
                            selection="vsgrid" if mode == "vsgrid" else "paper")
    if mode == "xval":
        mask = X.xval(q, k, geo, cfg, 128 ** -0.5, **opts)

    elif mode == "adaptive":
        mask = A.adaptive(q, k, geo, cfg, 128 ** -0.5, **opts)
    else:
        mask = (R.vsgrid_search if mode == "vsgrid" else R.search)(q, k, geo, cfg, 128 ** -0.5)[0]
    mask = mask & causal
    print(json.dumps(dict(tokens=n, spec=spec, density=round((mask.sum() / (32 * causal.sum())).item(), 4),
        paper_rows=round(A.adaptive.paper_rows, 3) if mode == "adaptive" else None, weights=[round(x, 1) for x in X.xval.weights.tolist()] if mode == "xval" else None, seconds=round(time.time() - t))), flush=True)
