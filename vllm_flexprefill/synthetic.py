"""Synthetic Q/K/V with planted, known attention structure (for tests and benchmarks).

Every KV head ``g`` owns

* a random unit *position code* per token, added to its keys
  (``k[x] += a * code[x]``);
* a *stripe direction* added to the keys of a few stripe positions, always
  including the first tokens (the sink);
* a *cluster direction* per cluster, added to every key of the key blocks in that
  cluster (a fraction ``cluster_fraction`` of the blocks belongs to a random
  cluster).

Each query head is planted as one of two kinds:

* vertical-slash: its queries add the stripe direction (every query attends to
  the stripes and the sink), the position codes of ``y - delta`` for each of its
  slash distances ``delta`` (multiples of the block size, so each lands on exactly
  one block diagonal; ``delta = 0`` is the local diagonal), and a locality bias:
  sinusoids at log-spaced frequencies (as RoPE has) whose product decays with the
  distance, so attention mass falls off with distance like a power law and the
  budget needed grows smoothly with ``gamma``;
* query-aware: every query of block ``r`` adds the direction of the cluster
  block ``r`` seeks (drawn at random), so query blocks attend to the key blocks of
  that cluster - a content-dependent, block-level pattern the pooled estimate
  sees. The last ``block_size`` queries (the probe) all seek one cluster, so the
  probe is coherent.

``strength`` is the planted logit (with the default ``1/sqrt(D)`` softmax scale).
Position codes, locality sinusoids and the (orthonormal) stripe and cluster
directions occupy separate dims, so the planted parts barely interfere. Values are
N(0, 1).

``paged_copy`` lays packed K/V out in a vLLM-style paged cache; ``fp8_quantised``
stores a tensor as vLLM's fp8 KV cache does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .blocks import cdiv
from .kernels import KVSource
from .selection import Pattern


@dataclass
class PlantedHead:
    kind: Pattern  # VERTICAL_SLASH or QUERY_AWARE
    # Tokens, multiples of block_size.
    slash_distances: list[int] = field(default_factory=list)


@dataclass
class Planted:
    """What was planted; positions are absolute token indices. Per KV head:
    ``stripes`` the stripe token positions (sink included), ``block_cluster`` the
    ``[num_blocks]`` cluster of each key block (``num_clusters``: none) and
    ``query_block_cluster`` the ``[num_blocks]`` cluster most queries of a block
    seek."""

    block_size: int
    heads: list[PlantedHead]
    stripes: list[list[int]]
    block_cluster: list[torch.Tensor]
    query_block_cluster: list[torch.Tensor]

    def kinds(self) -> list[str]:
        """The heads' pattern labels, as ``RequestStats.pattern`` lists them."""
        return [h.kind.label for h in self.heads]


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
    """``q [seq_len, Hq, D]``, ``k, v [seq_len, Hkv, D]`` and the :class:`Planted`
    truth.

    Query head ``h`` is query-aware when
    ``h % query_aware_every == query_aware_every - 1`` (``query_aware_every=0``:
    none), vertical-slash otherwise. ``strength`` (default ``ln(seq_len) + 1.5``) is
    the logit of the planted stripes, sink, slashes and clusters; ``locality``
    (default ``1.4 * ln(seq_len)``) scales the distance-decaying bias of
    vertical-slash heads; ``noise`` is the standard deviation of the random part of
    q and k; only ``cluster_fraction`` of the key blocks carry a cluster. Tensors
    are built on ``device`` directly.
    """
    # Dims: [0, D/2) random position codes; [D/2, 3D/4) locality sinusoids; the last
    # D/4 the stripe and cluster directions (orthonormal). The parts never interfere.
    if 1 + num_clusters > head_dim // 4:
        room = head_dim // 4 - 1
        raise ValueError(f"head_dim {head_dim} has room for at most {room} clusters")
    gen = torch.Generator(device=device).manual_seed(seed)
    # Every random draw, here and in the helpers, in one fixed order.
    kw = dict(generator=gen, device=device)
    strength = math.log(seq_len) + 1.5 if strength is None else strength
    locality = 1.4 * math.log(seq_len) if locality is None else locality
    amp = (strength * head_dim**0.5) ** 0.5  # amp * amp / sqrt(D) == strength
    directions = amp * _directions(num_kv_heads, num_clusters, head_dim, kw)
    codes = amp * _position_codes(num_kv_heads, seq_len, head_dim, kw)
    phase = _locality_phase(seq_len, head_dim, locality, device)
    q = noise * torch.randn(seq_len, num_q_heads, head_dim, **kw)
    k = noise * torch.randn(seq_len, num_kv_heads, head_dim, **kw) + phase[:, None]
    v = torch.randn(seq_len, num_kv_heads, head_dim, **kw)
    stripes, clusters, query_clusters = _plant_keys(
        k, directions, codes, block_size, num_stripes, cluster_fraction, kw
    )
    heads = []
    group = num_q_heads // num_kv_heads
    for h in range(num_q_heads):
        g = h // group
        if query_aware_every and h % query_aware_every == query_aware_every - 1:
            heads.append(PlantedHead(Pattern.QUERY_AWARE))
            q[:, h] += directions[g, 1 + query_clusters[g]]
        else:
            stripe = directions[g, 0]
            head = _plant_vertical_slash(
                q[:, h], stripe, codes[g], phase, block_size, kw
            )
            heads.append(head)
    block_seeks = [
        _majority_cluster(c, block_size, num_clusters) for c in query_clusters
    ]
    planted = Planted(block_size, heads, stripes, clusters, block_seeks)
    q, k, v = (x.to(device=device, dtype=dtype) for x in (q, k, v))
    return q, k, v, planted


def _directions(
    num_kv_heads: int, num_clusters: int, head_dim: int, kw: dict
) -> torch.Tensor:
    """``[Hkv, 1 + num_clusters, D]``: per KV head orthonormal directions in the
    last ``D/4`` dims, row 0 the stripe direction and row ``1 + c`` cluster ``c``."""
    shape = (num_kv_heads, 1 + num_clusters, head_dim)
    directions = torch.zeros(shape, device=kw["device"])
    for g in range(num_kv_heads):
        basis, _ = torch.linalg.qr(torch.randn(head_dim // 4, 1 + num_clusters, **kw))
        directions[g, :, head_dim - head_dim // 4 :] = basis.T
    return directions


def _position_codes(
    num_kv_heads: int, seq_len: int, head_dim: int, kw: dict
) -> torch.Tensor:
    """``[Hkv, seq_len, D]``: a random unit code per token, in the first ``D/2``
    dims."""
    codes = torch.zeros(num_kv_heads, seq_len, head_dim, device=kw["device"])
    code_dims = head_dim // 2
    codes[..., :code_dims] = torch.randn(num_kv_heads, seq_len, code_dims, **kw)
    return codes / codes.norm(dim=-1, keepdim=True)


def _locality_phase(
    seq_len: int, head_dim: int, locality: float, device
) -> torch.Tensor:
    """``[seq_len, D]`` sinusoids in dims ``[D/2, 3D/4)`` at frequencies from 1 to
    ``1/seq_len``: ``phase(y) . phase(x) / sqrt(D) = locality * mean_i cos(w_i (y -
    x))``."""
    code_dims, loc_dims = head_dim // 2, head_dim // 4
    freqs = seq_len ** (-torch.linspace(0, 1, loc_dims // 2, device=device))
    angles = torch.arange(seq_len, device=device)[:, None].float() * freqs[None, :]
    phase = torch.zeros(seq_len, head_dim, device=device)
    phase[:, code_dims : code_dims + loc_dims] = torch.cat(
        [angles.cos(), angles.sin()], -1
    )
    return phase * (locality * head_dim**0.5 / (loc_dims // 2)) ** 0.5


def _plant_keys(
    k: torch.Tensor,
    directions: torch.Tensor,
    codes: torch.Tensor,
    block_size: int,
    num_stripes: int,
    cluster_fraction: float,
    kw: dict,
) -> tuple[list[list[int]], list[torch.Tensor], list[torch.Tensor]]:
    """Add to each KV head's keys ``k [seq_len, Hkv, D]`` (in place) its position
    codes ``codes [Hkv, seq_len, D]``, its stripe direction on the stripe positions
    and its key blocks' cluster directions (``directions [Hkv, 1 + num_clusters,
    D]``; both scaled). Returns per KV head the stripe positions, the
    ``[num_blocks]`` cluster of each key block (``num_clusters``: none) and the
    ``[seq_len]`` cluster each query seeks."""
    seq_len, num_kv_heads = k.shape[:2]
    num_clusters = directions.shape[1] - 1
    num_blocks = cdiv(seq_len, block_size)
    pos = torch.arange(seq_len, device=kw["device"])
    block = pos // block_size
    probe = pos >= seq_len - block_size  # the last B queries: may straddle two blocks
    # Direction 1 + c is cluster c; the extra zero row is "no cluster".
    with_none = torch.cat([directions, torch.zeros_like(directions[:, :1])], dim=1)
    stripes, clusters, query_clusters = [], [], []
    for g in range(num_kv_heads):
        spots = torch.randperm(seq_len - 4, **kw)[:num_stripes] + 4
        stripes.append(sorted([0, 1, 2, 3] + spots.tolist()))
        cluster = torch.randint(num_clusters, (num_blocks,), **kw)
        unclustered = torch.rand(num_blocks, **kw) >= cluster_fraction
        clusters.append(torch.where(unclustered, num_clusters, cluster))
        # Each query block seeks one cluster; the probe queries all seek one cluster
        # other than the last key block's, so a query-aware probe is coherent and
        # its (causally half-hidden) diagonal block is not one of its targets.
        seek = torch.randint(num_clusters, (num_blocks,), **kw)
        probe_seeks = (clusters[g][-1] + 1) % num_clusters
        query_clusters.append(torch.where(probe, probe_seeks, seek[block]))
        k[:, g] += codes[g]
        k[stripes[g], g] += directions[g, 0]
        k[:, g] += with_none[g, 1 + clusters[g][block]]
    return stripes, clusters, query_clusters


def _plant_vertical_slash(
    q_head: torch.Tensor,
    stripe: torch.Tensor,
    codes: torch.Tensor,
    phase: torch.Tensor,
    block_size: int,
    kw: dict,
) -> PlantedHead:
    """Plant a vertical-slash head: add to its queries ``q_head [seq_len, D]`` (in
    place) the stripe direction ``stripe [D]``, the locality ``phase [seq_len, D]``
    and, for one random slash distance ``d``, the position code of token ``y - d``
    from its KV head's ``codes [seq_len, D]`` (both scaled)."""
    seq_len = q_head.shape[0]
    pos = torch.arange(seq_len, device=kw["device"])
    far_blocks = max(2, cdiv(seq_len, block_size) - 1)
    far = torch.randint(1, far_blocks, (1,), **kw).tolist()
    distances = [d * block_size for d in far if d * block_size < seq_len]
    q_head += stripe + phase
    for d in distances:
        q_head += codes[(pos - d).clamp(min=0)] * (pos >= d)[:, None]
    return PlantedHead(Pattern.VERTICAL_SLASH, distances)


def _majority_cluster(
    query_cluster: torch.Tensor, block_size: int, num_clusters: int
) -> torch.Tensor:
    """``[num_blocks]``: the cluster most queries of each block seek, from the
    cluster each query seeks (``query_cluster [seq_len]``)."""
    seq_len, device = len(query_cluster), query_cluster.device
    block = torch.arange(seq_len, device=device) // block_size
    votes = torch.zeros(cdiv(seq_len, block_size), num_clusters, device=device)
    one = torch.ones((), device=device)
    return votes.index_put_((block, query_cluster), one, accumulate=True).argmax(-1)


def paged_copy(
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens,
    page_size: int,
    seed: int = 0,
    key_scale: torch.Tensor | None = None,
    value_scale: torch.Tensor | None = None,
):
    """Copy packed K/V into a vLLM-layout cache ``[pages, 2, page_size, Hkv, D]`` on
    shuffled pages (page 0 stays the unused null page) and return the paged
    ``vllm_flexprefill.kernels.KVSource``; ``k, v [sum kv_lens, Hkv, D]`` are
    packed (fp8 ones with their scales)."""
    gen = torch.Generator().manual_seed(seed)
    pages_needed = [cdiv(n, page_size) for n in kv_lens]
    total = sum(pages_needed)
    order = (torch.randperm(total, generator=gen) + 1).tolist()
    shape = (total + 1, 2, page_size, *k.shape[1:])
    cache = torch.full(shape, float("nan"), dtype=k.dtype, device=k.device)
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
    return KVSource(
        cache[:, 0], cache[:, 1], table.to(k.device), key_scale, value_scale
    )


def fp8_quantised(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as vLLM's fp8 KV cache stores it: float8 e4m3 values and their float32
    per-tensor scale (real = stored x scale), the largest value at half the range."""
    scale = (x.abs().amax().float() / 224).clamp(min=1e-6)
    return (x / scale).to(torch.float8_e4m3fn), scale


def fp8_dequantised(stored: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 values of fp8 ``stored`` with its ``scale``."""
    return stored.float() * scale
