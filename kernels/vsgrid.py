"""The vsgrid selection's estimate and per-row thresholds (``selection: vsgrid``), as
batched torch ops on the device: ``reference.vsgrid_estimate`` and
``reference.top_mass`` with its budget clamp for every request of a batch at once.

Row ``t`` (global query block, absolute index ``a_t``) reads its segment's probe
masses ``m`` (``segment_probe.py``) as a vertical and as a slash,
``m[c] + m[c + a_e - a_t]`` for ``c <= a_t`` (``a_e``: the probe's query block),
normalised over the row, plus ``POOLED_WEIGHT`` times the pooled query-aware grid.
"""

from __future__ import annotations

import torch

from vllm_flexprefill.selection import POOLED_WEIGHT

from .plan import SparsePlan
from .segment_probe import SegmentProbes


def vsgrid_estimate_into(
    grid: torch.Tensor,
    masses: torch.Tensor,
    probes: SegmentProbes,
    plan: SparsePlan,
    rows_to_fill: torch.Tensor,
) -> None:
    """Turn the rows ``rows_to_fill [T]`` (bool) of ``grid [Hq, T, W]``, the pooled
    query-aware grid of every head, into the vsgrid estimate (0 above the diagonal),
    in place, from the probes' ``masses [P, Hq, W]``. Two grids of temporaries."""
    W = masses.shape[2]
    rows = masses[probes.row_probe]  # [T, Hq, W]
    cols = torch.arange(W, device=masses.device)
    slash_col = (cols[None, :] + probes.row_shift[:, None]).clamp(max=W - 1)
    rows += rows.gather(2, slash_col[:, None, :].expand_as(rows))
    causal = cols[None, :] <= plan.block_row[:, None]  # [T, W]
    rows *= causal[:, None, :]
    rows /= rows.sum(-1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny)
    rows *= rows_to_fill[:, None, None]
    # grid rows to fill: POOLED_WEIGHT x pooled + estimate; the others unchanged
    weight = torch.where(rows_to_fill, POOLED_WEIGHT, 1.0)
    grid.mul_(weight[None, :, None]).add_(rows.transpose(0, 1))


def clamped_thresholds(
    rows: torch.Tensor,
    count: torch.Tensor,
    threshold: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    top: int,
) -> torch.Tensor:
    """Per row of ``rows [Hq, T, W]``: the value of its ``count``-th largest entry
    (``count, threshold [Hq, T]`` from the top-mass pass), ``count`` clamped to
    ``[low, high]`` (``[T]``). ``top``: the most entries a clamp may need (``low``
    and every finite ``high`` at most ``top``)."""
    if top == 0:
        return threshold
    largest = rows.topk(min(top, rows.shape[2]), dim=2).values  # [Hq, T, top]

    def at(rank: torch.Tensor) -> torch.Tensor:
        index = (rank.clamp(1, largest.shape[2]) - 1)[None, :, None]
        return largest.gather(2, index.expand(rows.shape[0], -1, 1))[..., 0]

    threshold = torch.where(count < low, at(low), threshold)
    return torch.where(count > high, at(high), threshold)
