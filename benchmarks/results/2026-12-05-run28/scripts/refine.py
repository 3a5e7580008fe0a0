"""Candidate selection (issue 14, CPU only): vsgrid's estimate re-ranked by sampled queries.
Run 27 (``swap.py``) found vsgrid's per-row counts as good as the exact masses' and its
ranking the whole loss. Here vsgrid picks each (head, query block) row's count as landed,
keeps the ``widen`` x count blocks its estimate ranks highest as candidates, and ranks the
candidates by ``queries`` strided queries of the block attending exactly to the candidates'
keys (each query's softmax over the candidates' tokens, or over the whole causal row with
``whole_row=true``; averaged over the queries, summed per key block); the row keeps its count
of the re-ranked candidates, plus the sink and the local window. ``queries=128`` with a large
``widen`` is the exact ranking (run 27's ``swap which=rank``). With ``key_parts=n`` (> 0) the
queries see each block as the means of its ``n`` equal parts, each part's exponential weighted
by its size (a GPU grid's cost: no token-level keys). With ``sure=f`` (> 0) the row's top
``f`` x count blocks by the estimate are kept without re-ranking and only the candidates below
them are scored (the re-rank's work scales with ``widen - sure``). With ``group_union=true``
each head's candidates are the union of its KV head's query heads' (what a kernel sharing a
KV head's key tiles among its query heads scores at no extra tile loads); with
``row_union=n`` (> 1) the union over each run of ``n`` neighbouring query blocks (a kernel
taking ``n`` query blocks a program)."""
import torch
from vllm_flexprefill import reference as R
from pick import with_sink_and_window
from swap import keep_top, row_counts


def part_means(k, geo, key_parts):
    """``(means [nk * key_parts, Hk, D], sizes [nk * key_parts])``: the means of
    ``key_parts`` equal parts of every key block and their token counts."""
    B, nk = geo.block_size, geo.num_k_blocks
    kk = torch.nn.functional.pad(k.double(), (0, 0, 0, 0, 0, nk * B - geo.kv_len))
    valid = (torch.arange(nk * B) < geo.kv_len).double().view(nk * key_parts, -1)
    sums = kk.view(nk * key_parts, B // key_parts, *k.shape[1:]).mul(valid[..., None, None]).sum(1)
    sizes = valid.sum(1)
    return sums / sizes.clamp_min(1)[:, None, None], sizes


def sampled_positions(geo, queries):
    """``[nq, queries]`` chunk rows of each query block's sampled queries: every
    ``B / queries``-th position of the (absolutely aligned) block, ending at its last,
    clamped into the chunk."""
    B = geo.block_size
    step = B // queries
    absolute = (torch.arange(geo.first_q_block, geo.num_k_blocks) * B)[:, None]
    absolute = absolute + torch.arange(queries) * step + step - 1
    return (absolute.clamp(geo.context_len, geo.kv_len - 1) - geo.context_len)


def sampled_masses(q, k, geo, scale, queries, allowed, whole_row, key_parts=0):
    """``[H, nq, nk]``: per row, the mean over ``queries`` strided queries of the block of
    each query's softmax mass on each key block; ``allowed [H, nq, nk]`` bool limits the
    softmax (unless ``whole_row``) and the result to those blocks."""
    dt = R.compute_dtype(q)
    H, B, L, nq, nk = q.shape[1], geo.block_size, geo.kv_len, geo.num_q_blocks, geo.num_k_blocks
    if key_parts:
        means, sizes = part_means(k, geo, key_parts)
        kk = R.expand_kv_heads(means, H).to(dt)
        key_pos = torch.arange(nk * key_parts) * (B // key_parts)  # each part's first token
        log_size = sizes.clamp_min(1e-30).log().to(dt)
    else:
        kk = R.expand_kv_heads(k, H).to(dt)
        key_pos = torch.arange(L)
        log_size = torch.zeros(L, dtype=dt)
    pos = sampled_positions(geo, queries)
    causal = key_pos[None, None, :] <= (pos + geo.context_len)[:, :, None]  # [nq, S, L]
    key_block = key_pos // B
    out = torch.zeros(H, nq, nk, dtype=torch.float64)
    for h in range(H):
        s = torch.einsum("qsd,ld->qsl", q[pos, h].to(dt), kk[:, h]) * scale + log_size
        keep = causal if whole_row else causal & allowed[h][:, None, key_block]
        p = torch.softmax(s.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
        p = torch.nn.functional.pad(p, (0, nk * (key_parts or B) - p.shape[-1]))
        p = p.view(nq, queries, nk, key_parts or B)
        out[h] = p.sum(-1).mean(1).double()
    return out * allowed


def vsgrid_candidates(q, k, geo, config, scale, widen):
    """vsgrid's causal estimate, the causal block mask, each row's count at γ, and the
    candidates: each row's ``widen`` x count largest estimated blocks, with the sink
    and the local window."""
    segments = R.segment_block_masses(q, k, geo, scale)
    causal = geo.causal_block_mask(q.device)
    estimate = R.vsgrid_estimate(segments, q, k, geo, scale) * causal
    counts = row_counts(estimate, config.gamma)
    wide = (counts.double() * widen).ceil().long().clamp(max=geo.num_k_blocks)
    candidates = with_sink_and_window(keep_top(estimate, wide), geo)
    return estimate, causal, counts, candidates


def refine(q, k, geo, config, scale, queries=8, widen=2.0, whole_row=False, key_parts=0,
           sure=0.0, group_union=False, row_union=1):
    estimate, causal, counts, candidates = vsgrid_candidates(q, k, geo, config, scale, widen)
    if group_union:
        group = q.shape[1] // k.shape[1]
        union = candidates.view(k.shape[1], group, *candidates.shape[1:]).any(1)
        candidates = union.repeat_interleave(group, 0)
    if row_union > 1:
        H, nq, nk = candidates.shape
        runs = -(-nq // row_union)
        padded = torch.nn.functional.pad(candidates, (0, 0, 0, runs * row_union - nq))
        union = padded.view(H, runs, row_union, nk).any(2)
        candidates = union.repeat_interleave(row_union, 1)[:, :nq] & causal
    kept = keep_top(estimate, (counts.double() * sure).floor().long()) & causal
    sampled = sampled_masses(q, k, geo, scale, queries, candidates & ~kept, whole_row, key_parts)
    rest = keep_top(sampled, counts - kept.sum(-1)) & (candidates & ~kept)
    return with_sink_and_window(kept | rest, geo)
