"""Synthetic Q/K/V with planted, known attention structure (for tests and benchmarks).

Every KV head ``g`` owns

* a random unit *position code* per token, added to its keys (``k[x] += a * code[x]``);
* a *stripe direction* added to the keys of a few stripe positions, always including
  the first tokens (the sink);
* a *cluster direction* per cluster, added to every key of the key blocks in that
  cluster (a fraction ``cluster_fraction`` of the blocks belongs to a random cluster).

Each query head is planted as one of two kinds:

* ``"vertical_slash"``: its queries add the stripe direction (every query attends to
  the stripes and the sink), the position codes of ``y - delta`` for each of its
  slash distances ``delta`` (multiples of the block size, so each lands on exactly one
  block diagonal; ``delta = 0`` is the local diagonal), and a locality bias: sinusoids
  at log-spaced frequencies (as RoPE has) whose product decays with the distance, so
  attention mass falls off with distance like a power law and the budget needed grows
  smoothly with ``gamma``;
* ``"query_aware"``: every query of block ``r`` adds the direction of the cluster
  block ``r`` seeks (drawn at random), so query blocks attend to the key blocks of that
  cluster - a content-dependent, block-level pattern the pooled estimate sees. The last
  ``block_size`` queries (the probe) all seek one cluster, so the probe is coherent.

``strength`` is the planted logit (with the default ``1/sqrt(D)`` softmax scale).
Position codes, locality sinusoids and the (orthonormal) stripe and cluster directions
occupy separate dims, so the planted parts barely interfere. Values are N(0, 1).
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
    block_cluster: list[torch.Tensor]  # per KV head: [num_blocks] cluster of each key block (num_clusters: none)
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
    cluster_fraction: float = 1.0,
    locality: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Planted]:
    """``q [seq_len, Hq, D]``, ``k, v [seq_len, Hkv, D]`` and the :class:`Planted` truth.

    Query head ``h`` is query-aware when ``h % query_aware_every == query_aware_every - 1``
    (``query_aware_every=0``: none), vertical-slash otherwise. ``strength`` (default
    ``ln(seq_len) + 1.5``) is the logit of the planted stripes, sink, slashes and
    clusters; ``locality`` (default ``1.4 * ln(seq_len)``) scales the distance-decaying
    bias of vertical-slash heads; ``noise`` is the standard deviation of the random part
    of q and k; only ``cluster_fraction`` of the key blocks carry a cluster.
    Tensors are built on ``device`` directly.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(generator=gen, device=device)
    D, B = head_dim, block_size
    num_blocks = -(-seq_len // B)
    strength = math.log(seq_len) + 1.5 if strength is None else strength
    locality = 1.4 * math.log(seq_len) if locality is None else locality
    amp = (strength * D**0.5) ** 0.5  # amp * amp / sqrt(D) == strength
    # Dims: [0, D/2) random position codes; [D/2, 3D/4) locality sinusoids; the last
    # D/4 the stripe and cluster directions (orthonormal). The parts never interfere.
    code_dims, loc_dims = D // 2, D // 4
    if 1 + num_clusters > D // 4:
        raise ValueError(f"head_dim {D} has room for at most {D // 4 - 1} clusters")
    directions = torch.zeros(num_kv_heads, 1 + num_clusters, D, device=device)
    for g in range(num_kv_heads):
        basis, _ = torch.linalg.qr(torch.randn(D // 4, 1 + num_clusters, **kw))
        directions[g, :, D - D // 4 :] = basis.T
    codes = torch.zeros(num_kv_heads, seq_len, D, device=device)
    codes[..., :code_dims] = torch.randn(num_kv_heads, seq_len, code_dims, **kw)
    codes /= codes.norm(dim=-1, keepdim=True)
    # Direction 1 + c is cluster c; the extra zero row is "no cluster".
    with_none = torch.cat([directions, torch.zeros(num_kv_heads, 1, D, device=device)], dim=1)

    pos = torch.arange(seq_len, device=device)
    # Locality: phase(y) . phase(x) = mean_i cos(w_i (y - x)), frequencies from 1 to 1/seq_len.
    freqs = seq_len ** (-torch.linspace(0, 1, loc_dims // 2, device=device))
    angles = pos[:, None].float() * freqs[None, :]
    phase = torch.zeros(seq_len, D, device=device)
    phase[:, code_dims : code_dims + loc_dims] = torch.cat([angles.cos(), angles.sin()], -1)
    phase *= (locality * D**0.5 / (loc_dims // 2)) ** 0.5

    q = noise * torch.randn(seq_len, num_q_heads, D, **kw)
    k = noise * torch.randn(seq_len, num_kv_heads, D, **kw) + phase[:, None, :]
    v = torch.randn(seq_len, num_kv_heads, D, **kw)
    block = pos // B
    probe = pos >= seq_len - B  # the last B queries, which may straddle two blocks

    stripes, clusters, query_clusters = [], [], []
    for g in range(num_kv_heads):
        spots = torch.randperm(seq_len - 4, **kw)[:num_stripes] + 4
        stripes.append(sorted([0, 1, 2, 3] + spots.tolist()))
        cluster = torch.randint(num_clusters, (num_blocks,), **kw)
        unclustered = torch.rand(num_blocks, **kw) >= cluster_fraction
        clusters.append(torch.where(unclustered, num_clusters, cluster))  # num_clusters = none
        # Each query block seeks one cluster; the probe queries all seek one cluster other
        # than the last key block's, so a query-aware probe is coherent and its (causally
        # half-hidden) diagonal block is not one of its targets.
        seek = torch.randint(num_clusters, (num_blocks,), **kw)
        query_cluster = torch.where(probe, (clusters[g][-1] + 1) % num_clusters, seek[block])
        query_clusters.append(query_cluster)
        k[:, g] += amp * codes[g]
        k[stripes[g], g] += amp * directions[g, 0]
        k[:, g] += amp * with_none[g, 1 + clusters[g][block]]

    heads = []
    group = num_q_heads // num_kv_heads
    for h in range(num_q_heads):
        g = h // group
        if query_aware_every and h % query_aware_every == query_aware_every - 1:
            heads.append(PlantedHead("query_aware"))
            q[:, h] += amp * directions[g, 1 + query_clusters[g]]
            continue
        far = torch.randint(1, max(2, num_blocks - 1), (1,), **kw).tolist()
        distances = [d * B for d in far if d * B < seq_len]
        heads.append(PlantedHead("vertical_slash", distances))
        q[:, h] += amp * directions[g, 0] + phase
        for d in distances:
            source = (pos - d).clamp(min=0)
            q[:, h] += amp * codes[g][source] * (pos >= d)[:, None]

    # The cluster most of each query block's queries follow.
    query_block_cluster = [
        torch.zeros(num_blocks, num_clusters, device=device)
        .index_put_((block, c), torch.ones((), device=device), accumulate=True)
        .argmax(-1)
        for c in query_clusters
    ]
    planted = Planted(B, heads, stripes, clusters, query_block_cluster)
    return (
        q.to(device=device, dtype=dtype),
        k.to(device=device, dtype=dtype),
        v.to(device=device, dtype=dtype),
        planted,
    )


def paged_copy(k: torch.Tensor, v: torch.Tensor, kv_lens, page_size: int, seed: int = 0):
    """Copy packed K/V into a vLLM-layout cache ``[pages, 2, page_size, Hkv, D]`` on shuffled
    pages (page 0 stays the unused null page) and return the paged
    ``vllm_flexprefill.kernels.KVSource``; ``k, v [sum kv_lens, Hkv, D]`` are packed."""
    from vllm_flexprefill.kernels import KVSource

    gen = torch.Generator().manual_seed(seed)
    pages_needed = [-(-n // page_size) for n in kv_lens]
    total = sum(pages_needed)
    order = (torch.randperm(total, generator=gen) + 1).tolist()
    cache = torch.full((total + 1, 2, page_size, *k.shape[1:]), float("nan"), dtype=k.dtype, device=k.device)
    table = torch.zeros(len(kv_lens), max(pages_needed) + 2, dtype=torch.int32)
    start = 0
    for i, n in enumerate(kv_lens):
        for p in range(pages_needed[i]):
            page = order.pop()
            table[i, p] = page
            tokens = slice(start + p * page_size, start + min(n, (p + 1) * page_size))
            count = tokens.stop - tokens.start
            cache[page, 0, :count] = k[tokens]
            cache[page, 1, :count] = v[tokens]
        start += n
    return KVSource(cache[:, 0], cache[:, 1], table.to(k.device))
