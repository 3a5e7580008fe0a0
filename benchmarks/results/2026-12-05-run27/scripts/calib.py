"""Candidate selection (issue 14, CPU only): vsgrid (the landed estimate, fitted pooled
weight) with each head's estimate sharpened or flattened by a temperature fitted on the
same held-out probe rows as the weight. The per-row top-mass pick is invariant to a power
of the estimate in its order but not in how many blocks each row keeps: a head whose
estimate is too peaked (the rows' true mass spread wider than predicted) under-selects at a
given gamma, a too-flat one over-selects. ``estimate ** t`` (renormalised per row) with t
maximising ``sum_i sum_c m_i[c] log(normalised(mix_i ** t)[c])`` over the held-out rows
calibrates each head, so that gamma means the same kept mass on every head.
Options: ``temps`` (the candidate exponents, default 0.5..1.5 in 11 steps)."""
import torch
from vllm_flexprefill import reference as R
from pick import top_mass_rows
from itertools import pairwise


def fit_temperature(segments, grid, w, geo, temps):
    first = geo.first_q_block
    t = torch.tensor(temps, dtype=torch.float64)[:, None, None]
    ll = torch.zeros(len(temps), grid.shape[0], dtype=torch.float64)
    for (_, row, _, held), (_, nxt, _, masses) in pairwise(segments):
        at = torch.tensor([first + row])
        read = R.probe_read(masses, first + nxt, at, geo.num_k_blocks)[:, 0]
        mix = (1 - w[:, None]) * read + w[:, None] * grid[:, row].double()  # [H, nkb]
        powered = torch.where(mix > 0, mix.clamp_min(1e-30)[None] ** t, 0.0)
        pred = powered / powered.sum(-1, keepdim=True)
        ll += (held.double()[None] * torch.log(pred + 1e-9)).sum(-1)
    if not len(segments) > 1:
        return torch.ones(grid.shape[0], dtype=torch.float64)
    return t[:, 0, 0][ll.argmax(0)]


def calib(q, k, geo, config, scale, temps=None):
    temps = temps or [0.5 + 0.1 * i for i in range(11)]
    segments = R.segment_block_masses(q, k, geo, scale)
    grid = R.query_aware_grid(q, k, geo, scale).double()
    w = R.pooled_weights(segments, grid, geo)
    t = fit_temperature(segments, grid, w, geo, temps)
    calib.log.append(t.tolist())
    estimate = R.vsgrid_estimate(segments, q, k, geo, scale)
    powered = torch.where(estimate > 0, estimate.clamp_min(1e-30) ** t[:, None, None], 0.0)
    estimate = powered / powered.sum(-1, keepdim=True)
    return top_mass_rows(estimate, geo, config)


calib.log = []
