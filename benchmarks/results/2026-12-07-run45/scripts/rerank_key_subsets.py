"""Run 45 (CPU): would rerank keep its fidelity if its sampled masses read only part
of each candidate block's keys (a quarter of the key tiles' bytes)? The reference's
``sampled_block_masses`` replaced by one that sums ``exp`` over a subset of each
block's keys, scaled back up; then ``scripts/fidelity_cpu.py``'s main. VARIANT (env):
exact (the package's) | stride-N (every N-th key of the block, ending at its last,
x N) | norm-N (per head, the N keys of largest norm in each block, x B/N).
Usage: VARIANT=stride-4 python rerank_key_subsets.py --text code --tokens 8192 CONFIG"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
import fidelity_cpu  # noqa: E402
import torch  # noqa: E402

from vllm_flexprefill import reference as ref  # noqa: E402

variant = os.environ.get("VARIANT", "exact")


def key_subset(k, geo):
    """[kv_len] bool keys kept, and their weight."""
    B = geo.block_size
    keys = torch.arange(geo.kv_len)
    if variant.startswith("stride-"):
        n = int(variant.split("-")[1])
        return (keys % B) % n == n - 1, float(n)
    if variant.startswith("norm-"):
        n = int(variant.split("-")[1])
        return None, float(B) / n
    raise ValueError(variant)


def sub_masses(q, k, geo, scale, candidates):
    dt = ref.compute_dtype(q)
    H, nk = q.shape[1], geo.num_k_blocks
    k = ref.expand_kv_heads(k, H).to(dt)
    keys = torch.arange(geo.kv_len, device=q.device)
    key_block = keys // geo.block_size
    positions = ref.sampled_positions(geo).to(q.device)
    forced = ref.forced_blocks(geo, q.device)
    out = torch.zeros(candidates.shape, dtype=torch.float64, device=q.device)
    kept, weight = key_subset(k, geo)
    B = geo.block_size
    if kept is None:  # norm-N per head
        n = int(variant.split("-")[1])
        pad = nk * B - geo.kv_len
        norms = k.float().norm(dim=-1)  # [kv_len, H]
        norms = torch.nn.functional.pad(norms, (0, 0, 0, pad), value=-1.0)
        top = norms.view(nk, B, H).topk(min(n, B), dim=1).indices  # [nk, n, H]
        kept_h = torch.zeros(nk, B, H, dtype=torch.bool)
        kept_h.scatter_(1, top, True)
        kept_h = kept_h.view(nk * B, H)[: geo.kv_len]
    for rows in torch.arange(geo.num_q_blocks, device=q.device).split(64):
        pos = positions[rows]
        visible = keys <= pos[:, :, None]
        local = visible & forced[rows][:, None, key_block]
        for h in range(H):
            rows_q = q[pos - geo.context_len, h].to(dt)
            logits = torch.einsum("nsd,kd->nsk", rows_q, k[:, h]) * scale
            norm = torch.logsumexp(logits.masked_fill(~local, float("-inf")), -1)
            sub = kept if kept is not None else kept_h[:, h]
            allowed = visible & candidates[h, rows][:, None, key_block] & sub
            p = (logits - norm[..., None]).exp().masked_fill(~allowed, 0.0)
            sums = torch.zeros(*p.shape[:2], nk, dtype=dt, device=q.device)
            out[h, rows] = sums.index_add_(2, key_block, p).mean(1).double() * weight
    return out * candidates


if variant != "exact":
    ref.sampled_block_masses = sub_masses
print("variant", variant, flush=True)
fidelity_cpu.main()
