"""Run 38 (CPU): how much do rerank's candidate lists overlap between consecutive query
blocks of a head, and between a KV head's four query heads? The planted Llama-3.1-8B
layer (32/8 heads, d 128) in float32, 64-token blocks, γ 0.938 head-wide: the tiles a
program reading each block once for R consecutive rows would read, against one program a
row. Usage: python union_lab.py TOKENS"""

import sys

import torch

from vllm_flexprefill import reference as ref
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.config import FlexPrefillConfig
from vllm_flexprefill.synthetic import planted_qkv

n = int(sys.argv[1])
B = 64
q, k, v, _ = planted_qkv(n, 32, 8, 128, 128, seed=n, dtype=torch.float32, device="cpu")
geo = ChunkGeometry(n, n, B)
cfg = FlexPrefillConfig(
    gamma=0.938,
    selection="rerank",
    rerank_budget="head",
    block_size=B,
    min_budget=1,
    max_density=1,
)
scale = 128**-0.5
_, estimate, threshold = ref.vsgrid_rows(q, k, geo, cfg, scale)
forced = ref.forced_blocks(geo, q.device)
count, cand = ref.rerank_candidates(geo, estimate, threshold, forced)
T = cand.shape[1]
single = cand.sum().item()
rows = cand.shape[0] * T * (T + 1) / 2
print(f"n={n} rows={T} candidates/row={single / cand.shape[0] / T:.1f}", end=" ")
print(f"candidate density={single / rows:.3f}")
for R in (2, 4, 8):
    t = T // R * R
    c = cand[:, :t].reshape(cand.shape[0], t // R, R, -1)
    union = c.any(2).sum().item()
    own = c.sum().item()
    print(
        f"R={R}: tiles read {union / own:.3f} of per-row (union {union}, lists {own})"
    )
# the same with the 4 query heads of a KV head
g = cand.reshape(8, 4, T, -1)
print(f"KV group of 4 heads: {g.any(1).sum().item() / g.sum().item():.3f}")
