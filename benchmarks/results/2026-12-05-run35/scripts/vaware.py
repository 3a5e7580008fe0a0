"""Diagnostic (issue 14, CPU only): is the exact-mass oracle (run 23 per row, run 32's head-wide
budget) the bound on top-1 at a density, or does ranking blocks by what dropping them does to
the output keep more of the model's next tokens? ``vaware`` keeps the mass oracle's block
count (per row with ``scope=row``, per head with ``scope=head``) and spends it on the blocks
whose removal moves the attention output most, to first order:
``error[h, r, b] = sum over queries i of row block r of || sum_{j in b} p_ij (v_j - o_i) ||``
with the exact probabilities ``p`` and dense output ``o`` (``score=error``), or on
``mass x || mean of v over b - mean of o over r ||`` from block means only (``score=proxy``,
what a search could estimate). Plus the sink and a local window of ``window`` blocks."""
import torch
from candidates import force_sink_diag, row_topmass_mask
from swap import exact_block_masses, keep_top
from vllm_flexprefill import reference as R


def block_errors(q, k, v, geo, scale, score):
    """``[H, nb, nb]`` float64: the first-order output change of dropping each block."""
    dt = R.compute_dtype(q)
    H, B, L, nb = q.shape[1], geo.block_size, geo.kv_len, geo.num_k_blocks
    kk, vv = R.expand_kv_heads(k, H).to(dt), R.expand_kv_heads(v, H).to(dt)
    pad = nb * B - L
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    out = torch.zeros(H, nb, nb, dtype=torch.float64)
    for h in range(H):
        p = torch.softmax(((q[:, h].to(dt) @ kk[:, h].T) * scale).masked_fill(~causal, float("-inf")), -1)
        o = p @ vv[:, h]
        if score == "proxy":
            mass = torch.nn.functional.pad(p, (0, pad, 0, pad)).view(nb, B, nb, B).sum((1, 3))
            vmean = torch.nn.functional.pad(vv[:, h], (0, 0, 0, pad)).view(nb, B, -1).mean(1)
            omean = torch.nn.functional.pad(o, (0, 0, 0, pad)).view(nb, B, -1).mean(1)
            out[h] = (mass * torch.cdist(omean, vmean)).double()
            continue
        for b in range(nb):
            cols = slice(b * B, min((b + 1) * B, L))
            moved = p[:, cols] @ vv[cols, h] - p[:, cols].sum(-1, keepdim=True) * o
            norms = torch.nn.functional.pad(moved.norm(dim=-1), (0, pad))
            out[h, :, b] = norms.view(nb, B).sum(-1).double()
    return out


def vaware(q, k, geo, config, scale, value=None, score="error", scope="row", window=2, gamma=None):
    causal = geo.causal_block_mask(q.device)
    masses = exact_block_masses(q, k, geo, scale) * causal
    errors = block_errors(q, k, value, geo, scale, score) * causal
    forced = force_sink_diag(torch.zeros_like(causal), geo, window).expand_as(masses)
    oracle = force_sink_diag(row_topmass_mask(masses, gamma or config.gamma), geo, window)
    free = errors.masked_fill(forced | ~causal, -1.0)
    if scope == "row":
        counts = oracle.sum(-1) - forced.sum(-1)
        return keep_top(free, counts) & causal | forced
    H = masses.shape[0]
    budget = oracle.view(H, -1).sum(-1) - forced.reshape(H, -1).sum(-1)
    picked = torch.zeros_like(free.view(H, -1), dtype=torch.bool)
    for h in range(H):
        picked[h, free[h].flatten().topk(int(budget[h])).indices] = True
    return picked.view_as(masses) | forced
