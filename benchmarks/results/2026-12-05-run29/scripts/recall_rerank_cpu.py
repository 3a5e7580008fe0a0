"""Planted inputs (CPU reference, float32), one Llama-3.1-8B layer of TOKENS tokens: the
true attention mass each (head, query block) keeps, over every EVERY-th query block (and
the last), for vsgrid and ``selection: rerank`` at each GAMMA (run 26's
``recall_sampled_cpu.py`` for rerank: the re-rank runs on the sampled rows only, the
package's ``reference.reranked`` steps on those rows; density over the sampled rows).
Usage: python recall_rerank_cpu.py TOKENS EVERY GAMMA..."""
import json
import sys
import time

import torch
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import reference as R
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.selection import LOCAL_BLOCKS, RERANK_WIDTH
from vllm_flexprefill.synthetic import planted_qkv

torch.set_num_threads(2)
n, every = int(sys.argv[1]), int(sys.argv[2])
q, k, v, planted = planted_qkv(n, 32, 8, 128, 128, seed=n)
scale = 128**-0.5
geo = ChunkGeometry(n, n, 128)
nb = geo.num_k_blocks
rows = torch.tensor(sorted(set(range(0, nb, every)) | {nb - 1}))
cache = f"/tmp/recall_truth_{n}_{every}.pt"  # run 26's script writes the same truth
try:
    true = torch.load(cache)
except FileNotFoundError:
    true = torch.zeros(32, len(rows), nb)
    kk = R.expand_kv_heads(k, 32)
    pos = torch.arange(n)
    for i, r in enumerate(rows.tolist()):
        qpos = pos[r * 128 : (r + 1) * 128]
        logits = torch.einsum("qhd,khd->hqk", q[qpos], kk) * scale
        logits = logits.masked_fill(pos[None, None, :] > qpos[None, :, None], float("-inf"))
        true[:, i] = R.block_sums(torch.softmax(logits, -1).mean(1), 128, nb)
    torch.save(true, cache)
t = time.time()
segments = R.segment_block_masses(q, k, geo, scale)
estimate = R.vsgrid_estimate(segments, q, k, geo, scale)[:, rows]  # [H, rows, nb]
print(json.dumps(dict(tokens=n, every=every, rows=len(rows), estimate_s=round(time.time() - t))), flush=True)
causal = geo.causal_block_mask()[rows]
cols = torch.arange(nb)
forced = causal & ((cols == 0) | (rows[:, None] - cols < LOCAL_BLOCKS))
kk = R.expand_kv_heads(k, 32)
keys = torch.arange(n)
positions = R.sampled_positions(geo)[rows]  # [rows, S]


def sampled_masses(candidates):
    """``reference.sampled_block_masses`` on the sampled rows."""
    out = torch.zeros(candidates.shape, dtype=torch.float64)
    visible = keys <= positions[:, :, None]
    local = visible & forced[:, None, keys // 128]
    for h in range(32):
        logits = torch.einsum("nsd,kd->nsk", q[positions, h], kk[:, h]) * scale
        norm = torch.logsumexp(logits.masked_fill(~local, float("-inf")), -1)
        allowed = visible & candidates[h][:, None, keys // 128]
        p = (logits - norm[..., None]).exp().masked_fill(~allowed, 0.0)
        out[h] = torch.zeros(*p.shape[:2], nb).index_add_(2, keys // 128, p).mean(1).double()
    return out * candidates


def report(name, gamma, mask, t):
    recall = (true * mask).sum(-1)
    density = (mask.sum() / (32 * causal.sum())).item()
    print(json.dumps(dict(tokens=n, mode=name, gamma=gamma, density=round(density, 4),
          recall=round(recall.mean().item(), 4), recall_p10=round(recall.quantile(0.1).item(), 4),
          seconds=round(time.time() - t))), flush=True)


t = time.time()
paper = FlexPrefillConfig(gamma=0.9, tau=0.1, block_size=128, dense_threshold=0)
report("paper", 0.9, R.search(q, k, geo, paper, scale)[0][:, rows] & causal, t)
for gamma in map(float, sys.argv[3:]):
    t = time.time()
    cfg = FlexPrefillConfig(gamma=gamma, tau=0.1, block_size=128, dense_threshold=0, min_budget=1)
    low, high = cfg.budget_limits(nb)
    _, threshold = R.top_mass(estimate, gamma, at_least=low, at_most=high)
    vsgrid = causal & ((estimate >= threshold[..., None]) | forced)
    count = (estimate >= threshold[..., None]).sum(-1)
    wide = (RERANK_WIDTH * count).clamp(max=nb)
    widest = estimate.sort(-1, descending=True).values.gather(-1, (wide - 1)[..., None])
    candidates = causal & ((estimate >= widest) | forced)
    masses = sampled_masses(candidates)
    ranked = masses.masked_fill(~candidates, -1.0).sort(-1, descending=True).values
    last = ranked.gather(-1, (torch.minimum(count, candidates.sum(-1)) - 1)[..., None])
    rerank = forced | (candidates & (masses >= last) & (masses > 0))
    report("vsgrid", gamma, vsgrid, t)
    report("rerank", gamma, rerank, t)
