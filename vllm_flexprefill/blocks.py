"""Where a prefill chunk sits on FlexPrefill's block grid.

Blocks are aligned to absolute token positions: key block ``c`` holds keys
``[c*B, (c+1)*B)`` and query block ``r`` holds the chunk's queries at positions
``[r*B, (r+1)*B)``. A chunk of ``q_len`` queries at the end of a ``kv_len``-token
sequence (``kv_len - q_len`` cached context tokens) therefore spans query blocks
``first_q_block .. num_k_blocks - 1``; its first and last block may be partial. With
this alignment the diagonal block of query block ``r`` is key block ``r`` and a
slash offset ``s`` means the block pairs ``(r, r - s)``, whatever the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cdiv(a, b):
    """Ceiling division ``ceil(a / b)`` of ints or int tensors (``b > 0``)."""
    return -(-a // b)


@dataclass(frozen=True)
class ChunkGeometry:
    """Block geometry of one request's prefill chunk (all counts in tokens or
    blocks)."""

    q_len: int
    kv_len: int
    block_size: int

    def __post_init__(self) -> None:
        if not 1 <= self.q_len <= self.kv_len:
            raise ValueError(
                "need 1 <= q_len <= kv_len, "
                f"got q_len={self.q_len}, kv_len={self.kv_len}"
            )

    @property
    def context_len(self) -> int:
        """Cached tokens before the chunk."""
        return self.kv_len - self.q_len

    @property
    def num_k_blocks(self) -> int:
        return cdiv(self.kv_len, self.block_size)

    @property
    def first_q_block(self) -> int:
        """Absolute index of the block holding the chunk's first query."""
        return self.context_len // self.block_size

    @property
    def num_q_blocks(self) -> int:
        return self.num_k_blocks - self.first_q_block

    @property
    def probe_len(self) -> int:
        """Queries in the probe: the chunk's last ``block_size`` queries (fewer if the
        chunk is shorter)."""
        return min(self.block_size, self.q_len)

    @property
    def num_causal_pairs(self) -> int:
        """Causal (query block, key block) pairs: query block ``r`` sees ``r + 1`` key
        blocks."""
        return (
            self.num_k_blocks * (self.num_k_blocks + 1)
            - self.first_q_block * (self.first_q_block + 1)
        ) // 2

    def causal_block_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[num_q_blocks, num_k_blocks]`` bool: key block ``c`` is visible to query
        block ``r`` iff ``c <= r``."""
        rows = torch.arange(self.first_q_block, self.num_k_blocks, device=device)
        cols = torch.arange(self.num_k_blocks, device=device)
        return cols[None, :] <= rows[:, None]

    def segments(self, count: int) -> list[tuple[int, int]]:
        """The chunk's query blocks cut into at most ``count`` runs of near-equal
        length: ``[(first, last)]`` chunk-relative block rows, in order."""
        rows = self.num_q_blocks
        ends = sorted({max(0, cdiv(rows * (i + 1), count) - 1) for i in range(count)})
        return list(zip([0] + [e + 1 for e in ends[:-1]], ends, strict=True))

    def segment_probe(self, last_row: int, rows: int) -> tuple[int, int, int]:
        """The probe of a segment ending at chunk-relative block row ``last_row``: up
        to ``rows`` of that block's queries, evenly strided and ending at its last
        query. Returns ``(last, stride, count)``: absolute positions
        ``last - stride * (count - 1), ..., last - stride, last``."""
        block = self.first_q_block + last_row
        first = max(block * self.block_size, self.context_len)
        last = min((block + 1) * self.block_size, self.kv_len) - 1
        count = min(rows, last - first + 1)
        return last, (last - first + 1) // count, count
