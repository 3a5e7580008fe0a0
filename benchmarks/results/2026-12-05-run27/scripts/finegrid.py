"""Candidate selection (issue 14, CPU only): vsgrid with a finer query-aware grid.
``swap.py`` found vsgrid's per-row counts as good as the exact masses' and its ranking
the loss. The grid ranks a row's key blocks by the softmax of the query block's mean
against each key block's mean; a block whose queries disagree or whose keys hold one
strong match among many is blurred by the means. Here the grid of the estimate (and of
the pooled weight's fit) is the mean over ``queries`` strided queries of each query block
(0: the block mean, as landed) of the causal softmax against the means of ``key_parts``
equal parts of every key block, summed per key block."""
import torch
from vllm_flexprefill import reference as R


def fine_grid(q, k, geo, scale, queries, key_parts):
    B, H = geo.block_size, q.shape[1]
    nq, nk = geo.num_q_blocks, geo.num_k_blocks
    kk = R.expand_kv_heads(k, H).double()
    pad = nk * B - geo.kv_len
    kk = torch.nn.functional.pad(kk, (0, 0, 0, 0, 0, pad))  # [nk*B, H, D]
    part = B // key_parts
    kp = kk.view(nk * key_parts, part, H, -1)
    valid = (torch.arange(nk * B) < geo.kv_len).view(nk * key_parts, part).double()
    k_means = (kp * valid[:, :, None, None]).sum(1) / valid.sum(1).clamp_min(1)[:, None, None]
    k_means = k_means.permute(1, 0, 2)  # [H, nk*parts, D]
    empty = valid.sum(1) == 0
    if queries == 0:
        rows = R.block_means(q, geo.context_len, B, nq).double()[:, :, None]  # [H, nq, 1, D]
    else:
        starts = torch.arange(nq) * B
        offs = (torch.arange(queries) * (B // queries)) + (B // queries - 1)
        pos = (starts[:, None] + offs[None, :]).clamp(max=q.shape[0] - 1)  # [nq, S]
        rows = q[pos].double().permute(2, 0, 1, 3)  # [H, nq, S, D]
    logits = torch.einsum("hqsd,hkd->hqsk", rows, k_means) * scale
    causal = geo.causal_block_mask(q.device)  # [nq, nk]
    mask = causal.repeat_interleave(key_parts, -1) & ~empty[None, :]
    p = torch.softmax(logits.masked_fill(~mask[None, :, None, :], float("-inf")), -1)
    return p.mean(2).view(H, nq, nk, key_parts).sum(-1)


def finegrid(q, k, geo, config, scale, queries=0, key_parts=1):
    saved = R.query_aware_grid
    R.query_aware_grid = lambda q_, k_, g_, s_: fine_grid(q_, k_, g_, s_, queries, key_parts)
    try:
        from vllm_flexprefill.reference import vsgrid_search
        return vsgrid_search(q, k, geo, config, scale)[0]
    finally:
        R.query_aware_grid = saved
