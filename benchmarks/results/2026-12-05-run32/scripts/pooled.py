"""Diagnostic (issue 14, CPU only): is the exact-mass oracle's 94.6% top-1 on code 8K (run 23)
a bound on every block selection at that density, or only on selections that give each
(head, query block) row the same share gamma of its mass? ``pooled`` starts from the oracle
(per row the fewest blocks reaching gamma of the exact attention mass, plus the sink and a
local window of ``window`` blocks), keeps its block count per head (``scope=head``) or per
layer (``scope=layer``), and re-spends that count on the blocks of largest exact mass across
all rows of the head (or of the layer's heads): the selection of that count that keeps the
most attention mass. ``scope=row`` is the oracle itself."""
import torch
from candidates import force_sink_diag, row_topmass_mask
from swap import exact_block_masses


def pooled(q, k, geo, config, scale, scope="head", window=2, gamma=None):
    causal = geo.causal_block_mask(q.device)
    masses = exact_block_masses(q, k, geo, scale) * causal
    forced = force_sink_diag(torch.zeros_like(causal), geo, window).expand_as(masses)
    oracle = force_sink_diag(row_topmass_mask(masses, gamma or config.gamma), geo, window)
    if scope == "row":
        return oracle
    H = masses.shape[0]
    groups = 1 if scope == "layer" else H
    budget = oracle.view(groups, -1).sum(-1) - forced.reshape(groups, -1).sum(-1)
    free = masses.masked_fill(forced | ~causal, -1.0).reshape(groups, -1)
    picked = torch.zeros_like(free, dtype=torch.bool)
    for g in range(groups):
        picked[g, free[g].topk(int(budget[g])).indices] = True
    return picked.view_as(masses) | forced
