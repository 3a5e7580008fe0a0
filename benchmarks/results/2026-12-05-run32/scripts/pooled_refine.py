"""Issue 14 (CPU only): run 28's re-rank (``refine.py``, 16 sampled queries re-ranking twice
each row's count of vsgrid's candidates) with each row's count from a head-wide budget
instead of its own gamma: the row-normalised estimate's entries of the whole head, largest
first, until they reach ``gamma`` x the head's rows; a row keeps as many as it holds of them
(at least one). ``pooled.py`` found this budget worth ~0.4 points of top-1 with the exact
masses at equal density."""
import refine
import torch


def pooled_counts(estimate, gamma):
    """``[H, nq]`` long: each row's share of its head's fewest entries reaching ``gamma`` of
    the head's row-normalised mass."""
    H, nq, nk = estimate.shape
    rows = estimate / estimate.sum(-1, keepdim=True).clamp_min(1e-300)
    ordered, _ = rows.reshape(H, -1).sort(-1, descending=True)
    cum = ordered.cumsum(-1)
    count = ((cum < gamma * cum[:, -1:]).sum(-1) + 1).clamp(max=nq * nk)
    threshold = ordered.gather(-1, (count - 1)[:, None])[:, :, None]
    return (rows >= threshold).sum(-1).clamp(min=1)


def pooled_refine(q, k, geo, config, scale, **options):
    per_row = refine.row_counts
    refine.row_counts = pooled_counts
    try:
        return refine.refine(q, k, geo, config, scale, **options)
    finally:
        refine.row_counts = per_row
