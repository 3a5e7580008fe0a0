"""Issue 14 (CPU only): run 28's re-rank with its row counts pooled across each head.
Rerank (``refine.py``) keeps each (head, query block) row's vsgrid count of the candidates
its sampled queries rank highest. Run 32 found that spending each head's exact-mass oracle
count on the largest exact masses over all its rows gains ~0.4 points of top-1 at equal
density (``pooled.py``), but vsgrid's estimate under that budget does not
(``pooled_refine.py``). Here the head's budget is rerank's own (the sum of its rows'
vsgrid counts) and the masses that spend it are the sampled ones, taken over the whole
causal row (``whole_row``: each block's share of its row's mass, comparable across rows):
the head keeps its budget's largest sampled masses among the candidates (every row at least
its largest), plus the sink and the local window."""
import torch
from pick import with_sink_and_window
from refine import sampled_masses, vsgrid_candidates
from swap import keep_top

from vllm_flexprefill import reference as R


def pooled_sampled(q, k, geo, config, scale, queries=16, widen=2.0, whole_row=True):
    _, _, counts, candidates = vsgrid_candidates(q, k, geo, config, scale, widen)
    sampled = sampled_masses(q, k, geo, scale, queries, candidates, whole_row)
    return with_sink_and_window(pooled_top(sampled, counts) & candidates, geo)


def pooled_top(scores, counts):
    """``[H, nq, nk]`` bool: each head's ``counts.sum()`` largest ``scores`` over all
    its rows, and every row's largest."""
    pooled = keep_top(scores.reshape(scores.shape[0], -1), counts.sum(-1))
    return pooled.view_as(scores) | keep_top(scores, torch.ones_like(counts))


def pooled_package(q, k, geo, config, scale, forced_share=False):
    """The package's ``selection: rerank`` (``reference.reranked``: its candidates, its
    sampled masses relative to each query's mass on the forced blocks) with the rows'
    counts pooled per head as above: what a kernel could do without each sampled query's
    whole-row normaliser. With ``forced_share``, each row's masses are scaled by the
    forced blocks' share of the row in vsgrid's estimate (which every row has already),
    an estimate of the whole-row share at no extra pass."""
    _, estimate, threshold = R.vsgrid_rows(q, k, geo, config, scale)
    causal = geo.causal_block_mask(q.device)
    forced = R.forced_blocks(geo, q.device)
    count, candidates = R.rerank_candidates(geo, estimate, threshold, forced)
    masses = R.sampled_block_masses(q, k, geo, scale, candidates)
    if forced_share:
        rows = estimate * causal
        share = (rows * forced).sum(-1) / rows.sum(-1).clamp_min(1e-300)
        masses = masses * share[..., None]
    keep = torch.minimum(count, candidates.sum(-1))
    pooled = pooled_top(masses.masked_fill(~candidates, -1.0), keep)
    return forced | (candidates & pooled & (masses > 0))
