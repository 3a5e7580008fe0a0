"""What FlexPrefill selects for a request: each head's pattern and block mask."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import torch

from .blocks import ChunkGeometry

# The vsgrid selection (``selection: vsgrid``): the chunk's query blocks in SEGMENTS
# runs, each probed by SEGMENT_PROBE_ROWS queries of its last block; a row's estimate
# mixes its segment's probe read and the pooled query-aware grid row with its head's
# pooled weight, the one of POOLED_WEIGHTS evenly spaced in [MIN_POOLED_WEIGHT, 1]
# that predicts the head's held-out probe rows best; every row keeps the sink and its
# LOCAL_BLOCKS nearest key blocks (the diagonal and the one before it).
SEGMENTS = 8
SEGMENT_PROBE_ROWS = 32
MIN_POOLED_WEIGHT = 1 / 3
POOLED_WEIGHTS = 16
LIKELIHOOD_FLOOR = 1e-9  # added to a mix before its log (a block it calls impossible)
LOCAL_BLOCKS = 2

# The rerank selection (``selection: rerank``): each vsgrid row keeps as many blocks as
# vsgrid would, the forced ones and those of the RERANK_WIDTH times as many its
# estimate ranks highest on which RERANK_QUERIES strided queries of the query block put
# the most mass.
RERANK_WIDTH = 2
RERANK_QUERIES = 16


class Pattern(IntEnum):
    """A head's attention pattern; the value is the code the kernels write (int8)."""

    VERTICAL_SLASH = 0  # a few key columns plus a few block diagonals
    # the pooled query-block x key-block estimate, plus the minimum vertical-slash
    # skeleton
    QUERY_AWARE = 1
    DENSE = 2  # every causal block (the request is below the sparse path's thresholds)

    @property
    def label(self) -> str:
        """The public name: ``"vertical_slash"``, ``"query_aware"`` or ``"dense"``."""
        return self.name.lower()


@dataclass
class RequestStats:
    """What FlexPrefill chose for one request.

    ``pattern[h]`` is the :attr:`Pattern.label` of head ``h``;
    ``density[h]`` is selected / causal block pairs (float32 ``[Hq]``);
    ``block_mask`` is ``[Hq, num_q_blocks, num_k_blocks]`` bool on the chunk's grid.
    """

    pattern: list[str]
    density: torch.Tensor
    block_mask: torch.Tensor

    @classmethod
    def of(
        cls, patterns: Iterable[int], block_mask: torch.Tensor, geo: ChunkGeometry
    ) -> RequestStats:
        """From per-head pattern codes and the selected ``[Hq, nqb, nkb]`` mask."""
        density = (block_mask.sum((1, 2)) / geo.num_causal_pairs).float()
        return cls([Pattern(code).label for code in patterns], density, block_mask)
