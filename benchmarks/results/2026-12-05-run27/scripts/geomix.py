"""Candidate selection (issue 14, CPU only): vsgrid's two estimates combined as a product
of experts instead of a mixture. ``swap.py`` put the whole gap to the oracle in the ranking
of each row's blocks; a mixture ranks a block high when either estimate does, a product
``read ** (1 - w) * grid ** w`` (renormalised per row) only when both support it.
``w``: the landed fitted weight (``fitted=true``), one fitted under the product on the
same held-out probe rows in ``[fit_lo, fit_hi]`` (16 values), or this fixed value."""
from itertools import pairwise

import torch
from vllm_flexprefill import reference as R
from pick import top_mass_rows


def product_weights(segments, grid, geo, lo, hi, count=16, floor=1e-6):
    """[H]: per head the w in linspace(lo, hi, count) under which the product
    read ** (1 - w) * grid ** w (renormalised) best predicts the held-out probe rows."""
    a = geo.first_q_block
    w = torch.linspace(lo, hi, count, dtype=torch.float64)[:, None, None]
    ll = torch.zeros(count, grid.shape[0], dtype=torch.float64)
    for (_, row, _, held), (_, nxt, _, masses) in pairwise(segments):
        read = R.probe_read(masses, a + nxt, torch.tensor([a + row]), geo.num_k_blocks)[:, 0]
        causal = read > 0
        log_p = (1 - w) * torch.log(read + floor) + w * torch.log(grid[:, row] + floor)
        p = torch.softmax(log_p.masked_fill(~causal[None], float("-inf")), -1)
        ll += (held.double()[None] * torch.log(p + 1e-9)).sum(-1)
    if len(segments) < 2:
        return torch.full((grid.shape[0],), 1 / 3, dtype=torch.float64)
    return w[:, 0, 0][ll.argmax(0)]


def product_likelihood(segments, grid, geo, weight, floor=1e-6):
    """[H]: the held-out log-likelihood of the product with each head's ``weight``."""
    a = geo.first_q_block
    ll = torch.zeros(grid.shape[0], dtype=torch.float64)
    for (_, row, _, held), (_, nxt, _, masses) in pairwise(segments):
        read = R.probe_read(masses, a + nxt, torch.tensor([a + row]), geo.num_k_blocks)[:, 0]
        log_p = (1 - weight[:, None]) * torch.log(read + floor) + weight[:, None] * torch.log(
            grid[:, row] + floor
        )
        p = torch.softmax(log_p.masked_fill(read <= 0, float("-inf")), -1)
        ll += (held.double() * torch.log(p + 1e-9)).sum(-1)
    return ll


def geomix(q, k, geo, config, scale, w=0.5, fitted=False, floor=1e-6, fit_lo=None,
           fit_hi=1.0, choose=False, key_parts=1):
    segments = R.segment_block_masses(q, k, geo, scale)
    if key_parts > 1:  # finegrid.py's grid of key-block parts (the weight fitted on it too)
        from finegrid import fine_grid

        grid = fine_grid(q, k, geo, scale, 0, key_parts)
    else:
        grid = R.query_aware_grid(q, k, geo, scale).double()
    read = torch.zeros_like(grid)
    a = geo.first_q_block
    for first, last, _, masses in segments:
        rows = torch.arange(a + first, a + last + 1)
        read[:, first : last + 1] = R.probe_read(masses, a + last, rows, geo.num_k_blocks)
    if fit_lo is not None:  # w fitted under the product itself, in [fit_lo, fit_hi]
        weight = product_weights(segments, grid, geo, fit_lo, fit_hi)
        geomix.log.append(weight.tolist())
    elif fitted:  # the landed mixture's fitted weight
        weight = R.pooled_weights(segments, grid, geo)
    else:
        weight = torch.full((grid.shape[0],), float(w), dtype=torch.float64)
    weight = weight[:, None, None]
    causal = geo.causal_block_mask(q.device)
    log_est = (1 - weight) * torch.log(read + floor) + weight * torch.log(grid + floor)
    est = torch.softmax(log_est.masked_fill(~causal, float("-inf")), -1)
    if choose:  # per head the model (mixture or product) that predicts held-out rows best
        mixture_ll = R.held_out_likelihood(segments, grid, geo).max(0).values
        use_product = product_likelihood(segments, grid, geo, weight[:, 0, 0]) > mixture_ll
        geomix.log.append(use_product.tolist())
        mixture = (1 - weight) * read + weight * grid
        est = torch.where(use_product[:, None, None], est, mixture)
    return top_mass_rows(est, geo, config)


geomix.log = []
