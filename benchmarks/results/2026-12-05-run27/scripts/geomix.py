"""Candidate selection (issue 14, CPU only): vsgrid's two estimates combined as a product
of experts instead of a mixture. ``swap.py`` put the whole gap to the oracle in the ranking
of each row's blocks; a mixture ranks a block high when either estimate does, a product
``read ** (1 - w) * grid ** w`` (renormalised per row) only when both support it.
``w``: the landed fitted weight (``fitted=true``) or this fixed value."""
import torch
from vllm_flexprefill import reference as R
from vllm_flexprefill.selection import LOCAL_BLOCKS


def geomix(q, k, geo, config, scale, w=0.5, fitted=False, floor=1e-6):
    segments = R.segment_block_masses(q, k, geo, scale)
    grid = R.query_aware_grid(q, k, geo, scale).double()
    read = torch.zeros_like(grid)
    a = geo.first_q_block
    for first, last, _, masses in segments:
        rows = torch.arange(a + first, a + last + 1)
        read[:, first : last + 1] = R.probe_read(masses, a + last, rows, geo.num_k_blocks)
    weight = R.pooled_weights(segments, grid, geo) if fitted else torch.full((grid.shape[0],), float(w), dtype=torch.float64)
    weight = weight[:, None, None]
    causal = geo.causal_block_mask(q.device)
    log_est = (1 - weight) * torch.log(read + floor) + weight * torch.log(grid + floor)
    est = torch.softmax(log_est.masked_fill(~causal, float("-inf")), -1)
    low, high = config.budget_limits(geo.num_k_blocks)
    _, threshold = R.top_mass(est, config.gamma, at_least=low, at_most=high)
    rows = torch.arange(a, geo.num_k_blocks)
    cols = torch.arange(geo.num_k_blocks)
    forced = (cols[None, :] == 0) | (rows[:, None] - cols[None, :] < LOCAL_BLOCKS)
    return causal & ((est >= threshold[..., None]) | forced)
