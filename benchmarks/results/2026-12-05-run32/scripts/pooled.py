"""Diagnostic (issue 14, CPU only): is the exact-mass oracle's 94.6% top-1 on code 8K (run 23)
a bound on every block selection at that density, or only on selections that give each
(head, query block) row the same share gamma of its mass? ``pooled`` starts from the oracle
(per row the fewest blocks reaching gamma of the exact attention mass, plus the sink and a
local window of ``window`` blocks), keeps its block count per head (``scope=head``) or per
layer (``scope=layer``), and re-spends that count on the blocks of largest exact mass across
all rows of the head (or of the layer's heads): the selection of that count that keeps the
most attention mass. ``scope=row`` is the oracle itself."""
import torch
from swap import exact_block_masses


def row_top_mass(masses, gamma):
    """``[H, nq, nk]`` bool: per row the fewest blocks reaching ``gamma`` of its mass."""
    ordered, _ = masses.sort(-1, descending=True)
    cum = ordered.cumsum(-1)
    count = ((cum < gamma * cum[..., -1:]).sum(-1) + 1).clamp(max=masses.shape[-1])
    return masses >= ordered.gather(-1, (count - 1)[..., None])


def forced_blocks(geo, window):
    """``[nq, nk]`` bool: the sink and the last ``window`` causal blocks of every row."""
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)[:, None]
    cols = torch.arange(geo.num_k_blocks)[None, :]
    causal = cols <= rows
    return causal & ((cols == 0) | (rows - cols < window))


def pooled(q, k, geo, config, scale, scope="head", window=2, gamma=None):
    causal = geo.causal_block_mask(q.device)
    masses = exact_block_masses(q, k, geo, scale) * causal
    forced = forced_blocks(geo, window).expand_as(masses)
    oracle = (row_top_mass(masses, gamma or config.gamma) & causal) | forced
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
