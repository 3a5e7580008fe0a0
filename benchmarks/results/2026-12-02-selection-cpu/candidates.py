"""Candidate FlexPrefill selection modes (issue 14), built on reference.py's pieces.

Every search function: (q [L,Hq,D], k [L,Hkv,D], geo, config, scale, **opts) ->
mask [Hq, nqb, nkb] bool (causal; diagonal and sink always kept).
"""

from __future__ import annotations

import math

import torch

from vllm_flexprefill import reference as R
from vllm_flexprefill.blocks import ChunkGeometry, cdiv


# ---------------------------------------------------------------- helpers
def probe_at(q, k, geo: ChunkGeometry, scale, end: int, n: int, stride: int = 1):
    """Probe of the n queries at absolute positions [end-n, end) against keys < end.
    Returns (vertical_tokens [H,kv_len], slash_tokens [H,kv_len],
    vertical_blocks [H,nkb], slash_blocks [H,nkb], probe_mean [H,D]) (zero-padded)."""
    dt = R.compute_dtype(q)
    H, B = q.shape[1], geo.block_size
    kk = R.expand_kv_heads(k[:end], H).to(dt)
    pos = torch.arange(end - 1 - stride * (n - 1), end, stride)  # n queries, strided
    pos = pos[pos >= geo.context_len]
    n = len(pos)
    probe = q[pos - geo.context_len].to(dt)
    keys = torch.arange(end)
    visible = keys[None, :] <= pos[:, None]
    logits = torch.einsum("nhd,khd->hnk", probe, kk) * scale
    p = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    vt = torch.zeros(H, geo.kv_len, dtype=dt)
    vt[:, :end] = p.mean(1)
    distance = (pos[:, None] - keys[None, :]).clamp(min=0)
    st = torch.zeros(H, geo.kv_len, dtype=dt).scatter_add_(
        1, distance.flatten().expand(H, -1), p.flatten(1)) / n
    offset = (pos[:, None] // B - keys[None, :] // B).clamp(min=0)
    sb = torch.zeros(H, geo.num_k_blocks, dtype=dt).scatter_add_(
        1, offset.flatten().expand(H, -1), p.flatten(1)) / n
    vb = R.block_sums(vt, B, geo.num_k_blocks)
    return vt, st, vb, sb, probe.mean(0)


def is_query_aware(q_mean, k, geo, scale, vb, nkb_visible, tau):
    """JS test of reference step 3 restricted to the key blocks the probe sees."""
    H = q_mean.shape[0]
    k_means = R.block_means(R.expand_kv_heads(k, H), 0, geo.block_size, geo.num_k_blocks)
    k_means = k_means[:, :nkb_visible]
    est = torch.softmax(torch.einsum("hd,hnd->hn", q_mean, k_means) * scale, dim=-1)
    return R.js_distance(est, vb[:, :nkb_visible]) < tau


def row_topmass_mask(scores_rows: torch.Tensor, gamma: float, min_keep: int = 1):
    """scores_rows [H, nqb, nkb] >= 0 (0 outside causal): per row, the fewest top
    blocks reaching gamma of the row's mass (ties kept), at least min_keep."""
    ordered, _ = scores_rows.sort(-1, descending=True)
    cum = ordered.double().cumsum(-1)
    target = gamma * cum[..., -1:]
    count = ((cum < target).sum(-1) + 1).clamp(min=min_keep, max=scores_rows.shape[-1])
    thr = ordered.gather(-1, (count - 1)[..., None])
    return scores_rows >= thr  # callers AND with the causal mask


def force_sink_diag(mask, geo, window: int = 1):
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)[:, None]
    cols = torch.arange(geo.num_k_blocks)[None, :]
    causal = cols <= rows
    local = causal & ((rows - cols) < window)
    return (mask | local | (causal & (cols == 0))) & causal


# ---------------------------------------------------------------- paper
def paper(q, k, geo, config, scale, window: int = 1):
    mask, _ = R.search(q, k, geo, config, scale)
    return force_sink_diag(mask, geo, window)


# ------------------------------------------------------ (a) multi-probe
def vs_from_scores(vt, st, vb, sb, qa, geo, config, gamma, nkb_vis, rowwise=False):
    """Vertical-slash mask [H, nqb, nkb] from one probe's scores."""
    B = config.block_size
    low, high = R.budget_limits(config, geo.num_k_blocks)
    high_vis = min(high, nkb_vis)
    nv = (R.top_mass(vt, gamma)[0] // B + 1).clamp(min=min(low, high_vis), max=high_vis)
    ns = (R.top_mass(st, gamma)[0] // B + 1).clamp(min=min(low, high_vis), max=high_vis)
    nv = torch.where(qa, min(low, high_vis), nv)
    ns = torch.where(qa, min(low, high_vis), ns)
    forced = torch.zeros_like(vb)
    forced[:, 0] = float("inf")
    if not rowwise:
        cols = R.top_blocks(vb + forced, nv)
        offs = R.top_blocks(sb + forced, ns)
        return R.vertical_slash_mask(cols, offs, geo)
    # row-wise: each row r keeps its own top nv visible columns / top ns valid offsets
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
    cols_idx = torch.arange(geo.num_k_blocks)
    causal = cols_idx[None, :] <= rows[:, None]  # [nqb, nkb]
    vscore = (vb + forced)[:, None, :].masked_fill(~causal, -1.0)  # [H,nqb,nkb]
    colsel = R.top_blocks(vscore, nv[:, None].expand(-1, len(rows))) & causal
    sscore = (sb + forced)[:, None, :].masked_fill(~causal, -1.0)  # index = offset
    offsel = R.top_blocks(sscore, ns[:, None].expand(-1, len(rows))) & causal
    offset = (rows[:, None] - cols_idx[None, :]).clamp(min=0)
    on_slash = offsel.gather(2, offset[None].expand(offsel.shape[0], -1, -1))
    return causal & (colsel | on_slash)


def multiprobe(q, k, geo, config, scale, probes: int = 4, n: int | None = None,
               window: int = 1, rowwise: bool = False, qa_global: bool = False,
               spacing: str = "even"):
    """Split the chunk's query blocks into `probes` segments; each segment's rows use
    the vertical/slash selection of a probe of n queries ending at the segment's end
    (the last query of its last block)."""
    B = geo.block_size
    H = q.shape[1]
    n = n or geo.probe_len
    nqb = geo.num_q_blocks
    # segment ends in query-block rows (relative), inclusive
    if spacing == "even":
        ends = sorted({max(0, math.ceil(nqb * (i + 1) / probes) - 1) for i in range(probes)})
    else:  # geometric: more probes near the start
        ends = sorted({max(0, math.ceil(nqb * 2.0 ** (-(probes - 1 - i))) - 1)
                       for i in range(probes)})
    mask = torch.zeros(H, nqb, geo.num_k_blocks, dtype=torch.bool)
    qa_rows = torch.zeros(H, nqb, dtype=torch.bool)
    start = 0
    for e in ends:
        end_pos = min(geo.kv_len, (geo.first_q_block + e + 1) * B)
        nn = min(n, end_pos - geo.context_len)
        vt, st, vb, sb, pm = probe_at(q, k, geo, scale, end_pos, nn)
        nkb_vis = cdiv(end_pos, B)
        qa = is_query_aware(pm, k, geo, scale, vb, nkb_vis, config.tau)
        seg = vs_from_scores(vt, st, vb, sb, qa, geo, config, config.gamma, nkb_vis,
                             rowwise)
        mask[:, start : e + 1] = seg[:, start : e + 1]
        qa_rows[:, start : e + 1] = qa[:, None]
        start = e + 1
    if qa_global:
        qa_rows = qa_rows[:, -1:].expand(-1, nqb)
    if qa_rows.any():
        qam = R.query_aware_mask(q, k, geo, scale, config.gamma)
        mask |= qa_rows[:, :, None] & qam
    return force_sink_diag(mask, geo, window)


# ------------------------------- (b) union of last-probe and multi-probe
def union(q, k, geo, config, scale, probes: int = 4, n=None, window=1):
    a = multiprobe(q, k, geo, config, scale, probes=probes, n=n, window=window)
    b = paper(q, k, geo, config, scale, window=window)
    return a | b


# ------------------------- (e) last probe, per-row renormalised selection
def rowwise_paper(q, k, geo, config, scale, window=1):
    return multiprobe(q, k, geo, config, scale, probes=1, window=window, rowwise=True)


# -------------------------------------------- (d) XAttention antidiagonal
def xattn(q, k, geo, config, scale, stride: int = 8, window: int = 1,
          gamma: float | None = None):
    """Antidiagonal strided estimate of QK^T: per query block row, the fewest key
    blocks reaching gamma of the row's estimated mass. Cost ~ 1/stride of QK^T."""
    gamma = gamma or config.gamma
    dt = R.compute_dtype(q)
    H, B, S = q.shape[1], geo.block_size, stride
    kk = R.expand_kv_heads(k, H).to(dt)
    L = geo.kv_len
    assert geo.context_len == 0 and L % S == 0
    qs = q.to(dt).view(L // S, S, H, -1).flip(1)  # reversed within stride group
    ks = kk.view(L // S, S, H, -1)
    qs = qs.permute(2, 0, 1, 3).reshape(H, L // S, -1)
    ks = ks.permute(2, 0, 1, 3).reshape(H, L // S, -1)
    logits = qs @ ks.transpose(1, 2) * scale / S
    i = torch.arange(L // S)
    logits = logits.masked_fill(i[None, :] > i[:, None], float("-inf"))
    p = torch.softmax(logits, -1)  # [H, L/S, L/S]
    bs = B // S
    nb = geo.num_k_blocks
    p = torch.nn.functional.pad(p, (0, nb * bs - L // S, 0, nb * bs - L // S))
    grid = p.view(H, nb, bs, nb, bs).sum((2, 4))
    m = row_topmass_mask(grid, gamma)
    return force_sink_diag(m, geo, window)


# ----------------------------------------------------- oracle (upper bound)
def oracle(q, k, geo, config, scale, window=1, gamma=None):
    """Exact per-row block mass of the true attention; per row fewest blocks to gamma."""
    gamma = gamma or config.gamma
    dt = R.compute_dtype(q)
    H, B = q.shape[1], geo.block_size
    kk = R.expand_kv_heads(k, H).to(dt)
    L = geo.kv_len
    nb = geo.num_k_blocks
    grid = torch.zeros(H, nb, nb, dtype=dt)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for h in range(H):
        lg = (q[:, h].to(dt) @ kk[:, h].T) * scale
        p = torch.softmax(lg.masked_fill(~causal, float("-inf")), -1)
        p = torch.nn.functional.pad(p, (0, nb * B - L, 0, nb * B - L))
        grid[h] = p.view(nb, B, nb, B).sum((1, 3))
    m = row_topmass_mask(grid, gamma)
    return force_sink_diag(m, geo, window)


def landed(q, k, geo, config, scale):
    """The package's ``selection: vsgrid`` (``rerank`` with ``selection=rerank``)."""
    return R.vsgrid_search(q, k, geo, config, scale)[0]


MODES = {
    "paper": paper,
    "landed": landed,
    "multiprobe": multiprobe,
    "union": union,
    "rowwise": rowwise_paper,
    "xattn": xattn,
    "oracle": oracle,
}


# ------------- (e) per-row pooled-grid top-mass united with a VS selection
def hybrid(q, k, geo, config, scale, base: str = "multiprobe", gq: float = 0.9,
           **kw):
    """base mask (paper or multiprobe) | per-row fewest blocks reaching gq of the
    pooled (blockmean Q . blockmean K) row softmax, for every head."""
    mask = MODES[base](q, k, geo, config, scale, **kw)
    grid = R.query_aware_grid(q, k, geo, scale)
    return mask | (row_topmass_mask(grid, gq) & geo.causal_block_mask())


MODES["hybrid"] = hybrid


# ------- (e2) per-row top-mass over a grid rebuilt from each segment's probe
def vsgrid(q, k, geo, config, scale, probes: int = 4, n: int | None = None,
           gr: float | None = None, window: int = 1, combine: str = "sum",
           min_blocks: int = 0, pooled: float | str = 0.0, strided: bool = False):
    """Row r's estimated block mass est[r,c] = vb[c] + sb[r-c] from the probe of r's
    segment (keys c <= r only); per row keep the fewest blocks reaching gr of the
    row's estimated mass (plus sink, diagonal, optional per-row top-min_blocks).
    pooled > 0 mixes in the pooled-query grid: est += pooled * grid."""
    gr = gr or config.gamma
    B, H = geo.block_size, q.shape[1]
    n = n or geo.probe_len
    nqb, nkb = geo.num_q_blocks, geo.num_k_blocks
    ends = sorted({max(0, math.ceil(nqb * (i + 1) / probes) - 1) for i in range(probes)})
    rows = torch.arange(geo.first_q_block, nkb)
    cols = torch.arange(nkb)
    causal = cols[None, :] <= rows[:, None]
    offset = (rows[:, None] - cols[None, :]).clamp(min=0)
    est = torch.zeros(H, nqb, nkb, dtype=torch.float64)
    start = 0
    for e in ends:
        end_pos = min(geo.kv_len, (geo.first_q_block + e + 1) * B)
        nn = min(n, end_pos - geo.context_len)
        st = max(1, B // nn) if strided else 1
        _, _, vb, sb, _ = probe_at(q, k, geo, scale, end_pos, nn, st)
        vb, sb = vb.double(), sb.double()
        seg = slice(start, e + 1)
        v = vb[:, None, :].expand(-1, e + 1 - start, -1)
        s = sb[:, offset[seg]]
        est[:, seg] = v + s if combine == "sum" else torch.maximum(v, s)
        start = e + 1
    est = est.masked_fill(~causal, 0)
    est = est / est.sum(-1, keepdim=True)
    if pooled == "js":  # paper's pattern test on the last probe: QA heads use the
        # pooled grid (+ a 0.1-weighted VS estimate), VS heads the VS estimate only
        _, _, vb, _, pm = probe_at(q, k, geo, scale, geo.kv_len, geo.probe_len)
        qa = is_query_aware(pm, k, geo, scale, vb, nkb, config.tau)
        w = qa.double()[:, None, None]
        grid = R.query_aware_grid(q, k, geo, scale).double()
        est = (1 - w) * est + w * (grid + 0.1 * est)
    elif pooled:
        est = est + pooled * R.query_aware_grid(q, k, geo, scale).double()
    mask = row_topmass_mask(est, gr) & causal
    if min_blocks:
        mask |= R.top_blocks(est, torch.full((H, nqb), min_blocks)) & causal
    return force_sink_diag(mask, geo, window)


MODES["vsgrid"] = vsgrid
