"""Planted inputs (CPU reference, float32): the true attention mass per (head, query
block) for every EVERY-th query block (and the last; EVERY 1: all), all heads; density over all blocks,
recall over the sampled ones, split by the planted head kind.
Usage: python recall_sampled_cpu.py TOKENS EVERY SPEC...; SPEC: paper:GAMMA, vsgrid:GAMMA,
xval:GAMMA[:OPTS] or scoped:GAMMA[:OPTS] (OPTS: key=json,... passed to xval.py's function)."""
import json, sys, time
import torch
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import reference as R
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.synthetic import planted_qkv
import xval as X

torch.set_num_threads(2)
n, every = int(sys.argv[1]), int(sys.argv[2])
q, k, v, planted = planted_qkv(n, 32, 8, 128, 128, seed=n)
scale = 128 ** -0.5
geo = ChunkGeometry(n, n, 128)
nb = geo.num_k_blocks
rows = sorted(set(range(0, nb, every)) | {nb - 1})
qa = torch.tensor([h == "query_aware" for h in planted.kinds()])
cache = f"/tmp/recall_truth_{n}_{every}.pt"
t = time.time()
try:
    true = torch.load(cache)
except FileNotFoundError:
    true = torch.zeros(32, len(rows), nb)
    kk = R.expand_kv_heads(k, 32)
    pos = torch.arange(n)
    for i, r in enumerate(rows):
        qpos = pos[r * 128:(r + 1) * 128]
        logits = torch.einsum("qhd,khd->hqk", q[qpos], kk) * scale
        logits = logits.masked_fill(pos[None, None, :] > qpos[None, :, None], float("-inf"))
        true[:, i] = R.block_sums(torch.softmax(logits, -1).mean(1), 128, nb)
    torch.save(true, cache)
causal = geo.causal_block_mask()
print(json.dumps(dict(tokens=n, every=every, rows=len(rows), truth_s=round(time.time() - t))), flush=True)
for spec in sys.argv[3:]:
    mode, gamma, *opt = spec.split(":")
    opts = {a: json.loads(b) for a, b in (o.split("=") for o in (opt[0].split(",") if opt else []))}
    cfg = FlexPrefillConfig(gamma=float(gamma), tau=0.1, block_size=128, dense_threshold=0,
                            min_budget=1 if mode in ("vsgrid", "xval", "scoped") else 1024,
                            selection="vsgrid" if mode == "vsgrid" else "paper")
    if mode == "scoped":
        mask = X.scoped(q, k, geo, cfg, scale, **opts)
    elif mode == "xval":
        mask = X.xval(q, k, geo, cfg, scale, **opts)
    else:
        mask = (R.vsgrid_search if mode == "vsgrid" else R.search)(q, k, geo, cfg, scale)[0]
    mask = mask & causal
    recall = (true * mask[:, rows]).sum(-1)  # [H, rows]
    dens = lambda m: round((m.sum() / (m.shape[0] * causal.sum())).item(), 4)
    print(json.dumps(dict(tokens=n, spec=spec, density=dens(mask), density_qa=dens(mask[qa]),
        density_vs=dens(mask[~qa]), recall=round(recall.mean().item(), 4),
        recall_p10=round(recall.quantile(0.1).item(), 4), recall_qa=round(recall[qa].mean().item(), 4),
        recall_vs=round(recall[~qa].mean().item(), 4))), flush=True)
