"""Candidate selection (issue 14, CPU only): vsgrid with each head's mix of its two
estimates fitted on held-out probe rows.

vsgrid's estimate of a query block's attention is the segment probe read as
verticals and slashes (normalised) plus a fixed 0.5 x the pooled query-aware grid.
Which of the two predicts a head's rows better is a property of the head: on a head
whose pattern holds at every position the probe's read is exact and the pooled grid
is diffuse; on a head whose blocks follow content the pooled grid is right and the
probe, taken at another query block, points elsewhere. The probes measure this: the
probe of segment i + 1, read at segment i's probe row (extrapolated one segment back,
the farthest a segment's own probe reaches), and the pooled grid's row there are both
predictions of that row's exact block masses (segment i's probe). Per head the weight
w of the pooled grid maximises the held-out log-likelihood
sum_i sum_c m_i[c] log(w pooled_i[c] + (1 - w) probe_{i+1 -> i}[c]) over a grid of w;
every row's estimate is then (1 - w) probe + w pooled, and the row keeps the fewest
blocks reaching gamma of it, plus the sink and the local window as vsgrid does.
Options: ``weights`` (how many grid points in [0, 1], default 11), ``fixed`` (use this
w for every head instead of fitting: 1/3 is vsgrid's mix), ``floor`` (least w),
``segments`` (segment probes per chunk; default the reference's 8).
"""
import torch
from vllm_flexprefill import reference as R
from vllm_flexprefill.selection import LOCAL_BLOCKS


def probe_read(masses, a_src, a_row, nkb):
    """[H, nkb]: a probe's block masses (taken at block row a_src) read at row a_row
    as verticals and slashes, normalised over the causal columns."""
    cols = torch.arange(nkb)
    slash = (cols + (a_src - a_row)).clamp(0, nkb - 1)
    est = (masses + masses[:, slash]).masked_fill(cols[None, :] > a_row, 0)
    return est / est.sum(-1, keepdim=True)


def fit_weights(segments, pooled, geo, weights=11, floor=0.0):
    """[H] float64: per head the pooled weight maximising the held-out likelihood."""
    nkb = geo.num_k_blocks
    truth, probe, pool = [], [], []
    for (_, last, _, m), (_, nxt, _, m_next) in zip(segments, segments[1:]):
        truth.append(m.double())
        a = geo.first_q_block
        probe.append(probe_read(m_next.double(), a + nxt, a + last, nkb))
        pool.append(pooled[:, last])  # rows count from the chunk's first block
    H = pooled.shape[0]
    if not truth:
        return torch.full((H,), 1 / 3, dtype=torch.float64)
    t, p, g = (torch.stack(x, 1) for x in (truth, probe, pool))  # [H, n, nkb]
    w = torch.linspace(floor, 1, weights, dtype=torch.float64)
    mix = w[:, None, None, None] * g + (1 - w[:, None, None, None]) * p  # [W, H, n, nkb]
    ll = (t * torch.log(mix + 1e-9)).sum((-1, -2))  # [W, H]
    return w[ll.argmax(0)]


def xval(q, k, geo, config, scale, weights=11, fixed=None, floor=0.0, segments=None):
    if segments is not None:  # the number of segment probes (the reference's: 8)
        saved, R.SEGMENTS = R.SEGMENTS, segments
        try:
            return xval(q, k, geo, config, scale, weights, fixed, floor)
        finally:
            R.SEGMENTS = saved
    segments = R.segment_block_masses(q, k, geo, scale)
    pooled = R.query_aware_grid(q, k, geo, scale).double()
    probe = torch.zeros_like(pooled)  # each row's segment probe read, normalised
    for first, last, _, m in segments:
        for row in range(first, last + 1):
            a = geo.first_q_block
            probe[:, row] = probe_read(m.double(), a + last, a + row, geo.num_k_blocks)
    w = (torch.full((q.shape[1],), float(fixed), dtype=torch.float64) if fixed is not None
         else fit_weights(segments, pooled, geo, weights, floor))
    xval.weights = w
    xval.log.append(w.tolist())
    estimate = (1 - w)[:, None, None] * probe + w[:, None, None] * pooled
    low, high = config.budget_limits(geo.num_k_blocks)
    _, threshold = R.top_mass(estimate, config.gamma, at_least=low, at_most=high)
    causal = geo.causal_block_mask(q.device)
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
    cols = torch.arange(geo.num_k_blocks)
    forced = (cols[None, :] == 0) | (rows[:, None] - cols[None, :] < LOCAL_BLOCKS)
    return causal & ((estimate >= threshold[..., None]) | forced)


xval.log = []


def scoped(q, k, geo, config, scale, scope="global"):
    """vsgrid as landed (fitted w in [1/3, 1]), thresholded per head instead of per row:
    the rows' estimates (each summing to 1) keep their largest entries until the head's
    kept mass reaches gamma x rows (the paper's query-aware pick over the estimate);
    ``scope="content"``: only heads whose fitted w is 1, the others per row."""
    segments = R.segment_block_masses(q, k, geo, scale)
    estimate = R.vsgrid_estimate(segments, q, k, geo, scale)
    w = R.pooled_weights(segments, R.query_aware_grid(q, k, geo, scale).double(), geo)
    low, high = config.budget_limits(geo.num_k_blocks)
    _, row_threshold = R.top_mass(estimate, config.gamma, at_least=low, at_most=high)
    row_mask = estimate >= row_threshold[..., None]
    _, head_threshold = R.top_mass(estimate.flatten(1), config.gamma)
    head_mask = estimate >= head_threshold[:, None, None]
    use_head = torch.ones_like(w, dtype=torch.bool) if scope == "global" else w >= 1
    causal = geo.causal_block_mask(q.device)
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
    cols = torch.arange(geo.num_k_blocks)
    forced = (cols[None, :] == 0) | (rows[:, None] - cols[None, :] < LOCAL_BLOCKS)
    picked = torch.where(use_head[:, None, None], head_mask, row_mask)
    return causal & (picked | forced)
