"""How much of the true attention mass each selection covers on the planted inputs
(CPU reference, float32): per (head, query block) the exact mean attention mass on
each key block; per selection its density, mean recall (selected mass), the 10th
percentile of the rows' recall, and the oracle's density (per row the fewest blocks
reaching 0.9 / 0.95 of the true mass). Usage: python recall_cpu.py TOKENS [SPEC ...]
SPEC: paper:GAMMA, vsgrid:GAMMA[:pooled=W] or adaptive:GAMMA[:vgamma=G,need=F,qa_paper=true]. Prints one JSON line per selection."""
import json, sys, time
import torch
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import reference as R
from vllm_flexprefill import selection as S
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.synthetic import planted_qkv
import sys as _s; _s.path.insert(0, '../../2026-12-04-run24/scripts')
import adaptive as A
import xval as X

torch.set_num_threads(2)
n = int(sys.argv[1]); specs = sys.argv[2:]
q, k, v, _ = planted_qkv(n, 32, 8, 128, 128, seed=n)
scale = 128 ** -0.5
geo = ChunkGeometry(n, n, 128)
nb = geo.num_k_blocks
t = time.time()
cache = f"/tmp/recall_truth_{n}.pt"
try:
    true = torch.load(cache)
except FileNotFoundError:
    true = torch.zeros(32, nb, nb)
    kk = R.expand_kv_heads(k, 32)
    pos = torch.arange(n)
    for h in range(32):
        for r0 in range(0, n, 2048):
            logits = (q[r0:r0 + 2048, h] @ kk[:, h].T) * scale
            logits = logits.masked_fill(pos[None, :] > pos[r0:r0 + 2048, None], float("-inf"))
            p = torch.softmax(logits, -1)
            m = R.block_sums(p, 128, nb)  # [rows, nb]
            true[h, r0 // 128:(r0 + 2048) // 128] = m.view(-1, 128, nb).mean(1)
    torch.save(true, cache)
causal = geo.causal_block_mask()
def oracle_density(g):
    srt = true.sort(-1, descending=True).values.cumsum(-1)
    need = (srt < g - 1e-6).sum(-1) + 1
    return (need.sum() / (32 * causal.sum())).item()
print(json.dumps(dict(tokens=n, truth_s=round(time.time() - t), oracle_090=oracle_density(0.9), oracle_095=oracle_density(0.95))), flush=True)
for spec in specs:
    mode, gamma, *opt = spec.split(":")
    cfg = FlexPrefillConfig(gamma=float(gamma), tau=0.1, block_size=128, dense_threshold=0,
                            min_budget=1 if mode in ("vsgrid", "xval") else 1024,
                            selection="vsgrid" if mode == "vsgrid" else "paper")
    opts = {a: json.loads(b) for a, b in (o.split("=") for o in (opt[0].split(",") if opt else []))}
    if mode == "xval":
        mask = X.xval(q, k, geo, cfg, 128 ** -0.5, **opts)
        pats = R.search(q, k, geo, cfg, 128 ** -0.5)[1]
    elif mode == "adaptive":
        mask = A.adaptive(q, k, geo, cfg, scale, **opts)
        pats = R.search(q, k, geo, cfg, scale)[1]
    else:
        if "pooled" in opts:
            S.POOLED_WEIGHT = R.POOLED_WEIGHT = opts["pooled"]
        fn = R.vsgrid_search if mode == "vsgrid" else R.search
        mask, pats = fn(q, k, geo, cfg, scale)
    mask = mask & causal
    recall = (true * mask).sum(-1)  # [H, nqb]
    qa = torch.tensor([p.name == "QUERY_AWARE" for p in pats])
    print(json.dumps(dict(tokens=n, spec=spec, density=round((mask.sum() / (32 * causal.sum())).item(), 4),
        recall=round(recall.mean().item(), 4), recall_p10=round(recall.quantile(0.1).item(), 4),
        recall_qa=round(recall[qa].mean().item(), 4) if qa.any() else None,
        recall_vs=round(recall[~qa].mean().item(), 4),
        density_qa=round((mask[qa].sum() / (qa.sum() * causal.sum())).item(), 4) if qa.any() else None,
        paper_rows=round(A.adaptive.paper_rows, 3) if mode == "adaptive" else None, weights=[round(x, 1) for x in X.xval.weights.tolist()] if mode == "xval" else None,
        density_vs=round((mask[~qa].sum() / ((~qa).sum() * causal.sum())).item(), 4))), flush=True)
