"""Diagnostic (issue 14, CPU only; pass the option unquoted: `which=rank`): does vsgrid lose to the exact-mass oracle by how it
ranks each row's key blocks or by how many it keeps per row? ``swap`` keeps, per (head,
query block) row, the count of one selection and the ranking of the other: ``which=alloc``
ranks by vsgrid's estimate but keeps the oracle's count (the fewest blocks reaching gamma of
the exact masses); ``which=rank`` ranks by the exact masses but keeps vsgrid's count.
Both add the sink and vsgrid's local window."""
import torch
from vllm_flexprefill import reference as R
from pick import with_sink_and_window


def exact_block_masses(q, k, geo, scale):
    dt = R.compute_dtype(q)
    H, B, L, nb = q.shape[1], geo.block_size, geo.kv_len, geo.num_k_blocks
    kk = R.expand_kv_heads(k, H).to(dt)
    grid = torch.zeros(H, nb, nb, dtype=torch.float64)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for h in range(H):
        p = torch.softmax(((q[:, h].to(dt) @ kk[:, h].T) * scale).masked_fill(~causal, float("-inf")), -1)
        p = torch.nn.functional.pad(p, (0, nb * B - L, 0, nb * B - L))
        grid[h] = p.view(nb, B, nb, B).sum((1, 3)).double()
    return grid


def row_counts(scores, gamma):
    ordered, _ = scores.sort(-1, descending=True)
    cum = ordered.cumsum(-1)
    return ((cum < gamma * cum[..., -1:]).sum(-1) + 1).clamp(max=scores.shape[-1])


def keep_top(scores, counts):
    order = scores.argsort(-1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(scores.shape[-1]).expand_as(order))
    return rank < counts[..., None]


def swap(q, k, geo, config, scale, which="alloc"):
    exact = exact_block_masses(q, k, geo, scale)
    segments = R.segment_block_masses(q, k, geo, scale)
    estimate = R.vsgrid_estimate(segments, q, k, geo, scale)
    causal = geo.causal_block_mask(q.device)
    exact, estimate = exact * causal, estimate * causal
    if which == "alloc":
        picked = keep_top(estimate, row_counts(exact, config.gamma))
    else:
        picked = keep_top(exact, row_counts(estimate, config.gamma))
    return with_sink_and_window(picked, geo)
