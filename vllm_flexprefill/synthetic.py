"""Synthetic Q/K/V with planted, known attention structure (for tests and benchmarks).

Every KV head ``g`` owns

* a random unit *position code* per token, added to its keys (``k[x] += a * code[x]``);
* a *stripe direction* added to the keys of a few stripe positions, always including
  the first tokens (the sink);
* a *cluster direction* per key block cluster, added to every key of the block.

Each query head is planted as one of two kinds:

* ``"vertical_slash"``: its queries add the stripe direction (every query attends to
  the stripes and the sink) and the position codes of ``y - delta`` for each of its
  slash distances ``delta`` (multiples of the block size, so each lands on exactly one
  block diagonal; ``delta = 0`` is the local diagonal);
* ``"query_aware"``: every query of block ``r`` adds the direction of cluster
  ``cluster[r]``, so query blocks attend to the key blocks of their own cluster - a
  content-dependent, block-level pattern the pooled estimate sees. The last
  ``block_size`` queries all take the last block's cluster, so the probe is coherent.

``strength`` is the planted logit (with the default ``1/sqrt(D)`` softmax scale);
position codes live in 3/4 of the dims and the stripe and cluster directions,
orthonormal, in the rest, so the planted parts barely interfere. Values are N(0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class PlantedHead:
    kind: str  # "vertical_slash" or "query_aware"
    slash_distances: list[int] = field(default_factory=list)  # tokens, multiples of block_size


@dataclass
class Planted:
    """What was planted; positions are absolute token indices."""

    block_size: int
    heads: list[PlantedHead]
    stripes: list[list[int]]  # per KV head: stripe token positions (sink included)
    block_cluster: list[torch.Tensor]  # per KV head: [num_blocks] cluster of each key block
    query_block_cluster: list[torch.Tensor]  # per KV head: [num_blocks] cluster most queries of a block seek

    def kinds(self) -> list[str]:
        return [h.kind for h in self.heads]


def planted_qkv(
    seq_len: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int = 128,
    *,
    query_aware_every: int = 4,
    strength: float | None = None,
    noise: float = 0.5,
    num_stripes: int = 3,
    num_clusters: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Planted]:
    """``q [seq_len, Hq, D]``, ``k, v [seq_len, Hkv, D]`` and the :class:`Planted` truth.

    Query head ``h`` is query-aware when ``h % query_aware_every == query_aware_every - 1``
    (``query_aware_every=0``: none), vertical-slash otherwise. ``strength`` defaults to
    ``ln(seq_len) + 4`` so the planted tokens outweigh the whole unplanted rest;
    ``noise`` is the standard deviation of the random part of q and k.
    """
    gen = torch.Generator().manual_seed(seed)
    D, B = head_dim, block_size
    num_blocks = -(-seq_len // B)
    strength = math.log(seq_len) + 4.0 if strength is None else strength
    amp = (strength * D**0.5) ** 0.5  # amp * amp / sqrt(D) == strength
    # Position codes live in the first 3/4 of the dims; the stripe and cluster
    # directions are orthonormal in the last 1/4, so the two never interfere.
    code_dims = D * 3 // 4
    if 1 + num_clusters > D - code_dims:
        raise ValueError(f"head_dim {D} has room for at most {D - code_dims - 1} clusters")
    directions = torch.zeros(num_kv_heads, 1 + num_clusters, D)
    for g in range(num_kv_heads):
        basis, _ = torch.linalg.qr(torch.randn(D - code_dims, 1 + num_clusters, generator=gen))
        directions[g, :, code_dims:] = basis.T
    codes = torch.zeros(num_kv_heads, seq_len, D)
    codes[..., :code_dims] = torch.randn(num_kv_heads, seq_len, code_dims, generator=gen)
    codes /= codes.norm(dim=-1, keepdim=True)

    q = noise * torch.randn(seq_len, num_q_heads, D, generator=gen)
    k = noise * torch.randn(seq_len, num_kv_heads, D, generator=gen)
    v = torch.randn(seq_len, num_kv_heads, D, generator=gen)
    pos = torch.arange(seq_len)
    block = pos // B
    probe = pos >= seq_len - B  # the last B queries, which may straddle two blocks

    stripes, clusters, query_clusters = [], [], []
    for g in range(num_kv_heads):
        spots = torch.randperm(seq_len - 4, generator=gen)[:num_stripes] + 4
        stripes.append(sorted([0, 1, 2, 3] + spots.tolist()))
        clusters.append(torch.randint(num_clusters, (num_blocks,), generator=gen))
        # Queries follow their block's cluster; the probe queries all follow one cluster
        # other than the last key block's, so a query-aware probe is coherent and its
        # (causally half-hidden) diagonal block is not one of its targets.
        query_cluster = torch.where(probe, (clusters[g][-1] + 1) % num_clusters, clusters[g][block])
        query_clusters.append(query_cluster)
        k[:, g] += amp * codes[g]
        k[stripes[g], g] += 1.2 * amp * directions[g, 0]
        k[:, g] += amp * directions[g, 1 + clusters[g][block]]

    heads = []
    group = num_q_heads // num_kv_heads
    for h in range(num_q_heads):
        g = h // group
        if query_aware_every and h % query_aware_every == query_aware_every - 1:
            heads.append(PlantedHead("query_aware"))
            q[:, h] += amp * directions[g, 1 + query_clusters[g]]
            continue
        far = torch.randint(1, max(2, num_blocks - 1), (1,), generator=gen).tolist()
        distances = sorted({0} | {d * B for d in far if d * B < seq_len})
        heads.append(PlantedHead("vertical_slash", distances))
        q[:, h] += amp * directions[g, 0]
        for d in distances:
            source = (pos - d).clamp(min=0)
            q[:, h] += amp * codes[g][source] * (pos >= d)[:, None]

    # The cluster most of each query block's queries follow.
    query_block_cluster = [
        torch.zeros(num_blocks, num_clusters).index_put_((block, c), torch.ones(()), accumulate=True).argmax(-1)
        for c in query_clusters
    ]
    planted = Planted(B, heads, stripes, clusters, query_block_cluster)
    return (
        q.to(device=device, dtype=dtype),
        k.to(device=device, dtype=dtype),
        v.to(device=device, dtype=dtype),
        planted,
    )
