"""FlexPrefill in plain PyTorch: the readable oracle every kernel is checked against.

One request at a time, with chunked-prefill semantics: the ``q_len`` queries are the
last positions of a ``kv_len``-token sequence whose keys are all visible (the first
``kv_len - q_len`` keys are cached context). Math runs in float32 (float64 inputs stay
float64); cumulative sums run in float64. Shapes: ``q [q_len, Hq, D]``,
``k, v [kv_len, Hkv, D]``; query head ``h`` reads KV head ``h // (Hq // Hkv)``.

Per query head (see ``ChunkGeometry`` for the block grid):

1. Probe: the chunk's last ``min(B, q_len)`` queries attend causally to all keys.
2. Vertical scores = mean of the probe rows; slash scores = sums along each diagonal
   (distance ``query_pos - key_pos``) divided by the probe length. The fewest tokens
   whose scores reach ``gamma`` become budgets ``tokens // B + 1`` blocks, clamped to
   ``[ceil(min_budget / B), ceil(max_budget / B)]`` and to the number of key blocks.
3. Pattern: ``D = sqrt(JS(a_est || a_true))`` with ``a_est = softmax(mean(probe q) .
   blockmean(K)^T . scale)`` and ``a_true`` the block sums of the vertical scores.
   ``D < tau``: query-aware head; otherwise vertical-slash.
4. Vertical-slash: the top vertical columns (column 0, the sink, always) apply to every
   query block at or below the diagonal; the top slash offsets (offset 0, the
   diagonal, always) apply to every block on that diagonal.
5. Query-aware: budgets drop to the minimum (a vertical-slash skeleton), united with
   the global top-mass pick over the causal row-softmax of ``blockmean(Q) .
   blockmean(K)^T . scale`` (chunk query blocks x all key blocks), keeping blocks until
   their mass reaches ``gamma`` times the number of rows.
6. Block-sparse causal attention over exactly the selected block pairs, returning
   the output and every row's natural-log log-sum-exp.

With ``selection: vsgrid`` (:func:`vsgrid_search`) steps 1-5 give way to per-query-block
estimates: the chunk's query blocks are cut into ``SEGMENTS`` segments, each probed by
``SEGMENT_PROBE_ROWS`` strided queries of its last block; a query block reads its
segment's probe masses as verticals and slashes, normalised, mixed with its row of the
query-aware grid by its head's pooled weight (:func:`pooled_weights`: the weight under
which the next segment's probe and the grid best predict each segment's probe row),
and keeps the fewest key blocks reaching ``gamma`` of that estimate (clamped to the
budgets), plus the sink and the ``LOCAL_BLOCKS`` nearest key blocks.
``selection: rerank`` (:func:`reranked`) keeps as many blocks per row, re-ranking the
estimate's top ``RERANK_WIDTH`` times as many by the mass ``RERANK_QUERIES`` strided
queries of the block put on them (with ``rerank_budget: head``, each head keeps as
many blocks in all, spent over its rows by each candidate's share of its row's
sampled mass).

Requests for which ``config.runs_sparse(q_len, kv_len)`` is false take dense causal
attention (every causal block selected, pattern ``Pattern.DENSE``), and so do requests
whose selection keeps more than ``config.density_limit`` of their causal block pairs
(all heads together): at that density the search saves nothing.

Deliberate deviations from the official code (ByteDance-Seed/FlexPrefill a24b27b):

* The model's softmax scale is used everywhere; the official probe and pooled
  estimates always use ``1/sqrt(d)`` (a known defect).
* Budgets convert tokens to blocks with ``block_size``, not a hard-coded 128.
* Slash block scores are the probe's exact mass on each block diagonal of the
  absolute block grid; the official code pools token diagonals ``x // B`` from the
  sequence end, which mis-assigns diagonals that cross two block diagonals.
* Blocks are aligned to absolute positions so that a chunk with cached context, and
  a varlen batch, select exactly as one long prompt would on the same rows.
* The JS distance treats ``0 * log 0`` as 0; the official code gets NaN and so
  silently forces such heads to vertical-slash.
* The query-aware pick keeps the block that crosses ``gamma`` (the fewest blocks that
  reach it, as the paper states; the official code drops it), and keeps every block
  tied with it, so the kernels can select by a threshold and agree exactly.
* ``max_budget`` also caps the budgets after ``ceil`` (the official code does the
  same); it does not limit the query-aware pick, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from .blocks import ChunkGeometry
from .config import FlexPrefillConfig
from .selection import (
    LIKELIHOOD_FLOOR,
    LOCAL_BLOCKS,
    MIN_POOLED_WEIGHT,
    POOLED_WEIGHTS,
    RERANK_QUERIES,
    RERANK_WIDTH,
    SEGMENT_PROBE_ROWS,
    SEGMENTS,
    Pattern,
    RequestStats,
)


@dataclass
class ProbeScores:
    """Scores of the probe rows, per query head (all float, ``H`` query heads)."""

    vertical_tokens: torch.Tensor  # [H, kv_len], each row sums to 1
    slash_tokens: torch.Tensor  # [H, kv_len], index = distance query_pos - key_pos
    vertical_blocks: torch.Tensor  # [H, num_k_blocks], mass per key block
    slash_blocks: torch.Tensor  # [H, num_k_blocks], mass per block offset r - c


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def expand_kv_heads(k: torch.Tensor, num_q_heads: int) -> torch.Tensor:
    """``[L, Hkv, D] -> [L, Hq, D]``: query head ``h`` gets KV head
    ``h // (Hq // Hkv)``."""
    return k.repeat_interleave(num_q_heads // k.shape[1], dim=1)


def probe_scores(
    q: torch.Tensor, k: torch.Tensor, geo: ChunkGeometry, scale: float
) -> ProbeScores:
    """Step 1-2 inputs: causal softmax of the probe rows against all keys, reduced."""
    dt = compute_dtype(q)
    n = geo.probe_len
    k = expand_kv_heads(k, q.shape[1]).to(dt)
    probe = q[-n:].to(dt)  # [n, H, D]
    dev = q.device
    # absolute position of each probe row
    pos = torch.arange(geo.kv_len - n, geo.kv_len, device=dev)
    keys = torch.arange(geo.kv_len, device=dev)
    visible = keys[None, :] <= pos[:, None]  # [n, kv_len]
    logits = torch.einsum("nhd,khd->hnk", probe, k) * scale
    # [H, n, kv_len]
    p = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)

    H, B = q.shape[1], geo.block_size
    vertical_tokens = p.mean(dim=1)
    # [n, kv_len]; masked entries carry p = 0
    distance = (pos[:, None] - keys[None, :]).clamp(min=0)
    slash_tokens = (
        torch.zeros(H, geo.kv_len, dtype=dt, device=dev).scatter_add_(
            1, distance.flatten().expand(H, -1), p.flatten(1)
        )
        / n
    )
    # block diagonal r - c
    offset = (pos[:, None] // B - keys[None, :] // B).clamp(min=0)
    slash_blocks = (
        torch.zeros(H, geo.num_k_blocks, dtype=dt, device=dev).scatter_add_(
            1, offset.flatten().expand(H, -1), p.flatten(1)
        )
        / n
    )
    vertical_blocks = block_sums(vertical_tokens, B, geo.num_k_blocks)
    return ProbeScores(vertical_tokens, slash_tokens, vertical_blocks, slash_blocks)


def block_sums(x: torch.Tensor, block_size: int, num_blocks: int) -> torch.Tensor:
    """``[H, L] -> [H, num_blocks]``: sum of each run of ``block_size`` entries."""
    padded = torch.nn.functional.pad(x, (0, num_blocks * block_size - x.shape[1]))
    return padded.view(x.shape[0], num_blocks, block_size).sum(-1)


def block_means(
    x: torch.Tensor, start: int, block_size: int, num_blocks: int
) -> torch.Tensor:
    """``[L, H, D]`` tokens at absolute positions ``start..start+L-1`` ->
    ``[H, num_blocks, D]`` mean of the real tokens in each absolute block, from
    block ``start // block_size`` on (partial blocks average fewer tokens)."""
    dt = compute_dtype(x)
    first = start // block_size
    block_of = (torch.arange(x.shape[0], device=x.device) + start) // block_size - first
    sums = torch.zeros(
        num_blocks, x.shape[1], x.shape[2], dtype=dt, device=x.device
    ).index_add_(0, block_of, x.to(dt))
    counts = torch.bincount(block_of, minlength=num_blocks).to(dt)
    return (sums / counts[:, None, None]).transpose(0, 1)


def top_mass(
    scores: torch.Tensor, fraction: float, at_least: int = 1, at_most: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fewest top entries of each row of ``scores [..., L]`` (non-negative) whose sum
    reaches ``fraction`` of the row total, that count clamped to ``[at_least,
    at_most]`` (and to ``L``).

    Returns ``(count [...] int64, threshold [...])``: how many entries are taken and
    the value of the last one (every entry ``>= threshold`` is at least as
    important).
    """
    ordered, _ = scores.sort(dim=-1, descending=True)
    cumulative = ordered.double().cumsum(-1)
    target = fraction * cumulative[..., -1:]
    count = (cumulative < target).sum(-1) + 1
    length = scores.shape[-1]
    count = count.clamp(
        min=at_least, max=length if at_most is None else min(at_most, length)
    )
    threshold = ordered.gather(-1, (count - 1)[..., None]).squeeze(-1)
    return count, threshold


def budget_blocks(
    token_count: torch.Tensor, config: FlexPrefillConfig, num_k_blocks: int
) -> torch.Tensor:
    """Token counts -> block budgets ``count // B + 1``, clamped to the configured
    ``[min_budget, max_budget]`` (in blocks, rounded up) and to ``num_k_blocks``."""
    B = config.block_size
    low, high = config.budget_limits(num_k_blocks)
    return (token_count // B + 1).clamp(min=low, max=high)


def js_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Square root of the Jensen-Shannon divergence (natural log) between the rows
    of two distributions ``[H, n]``; in ``[0, sqrt(ln 2)]``."""
    m = (p + q) / 2
    divergence = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) + 0.5 * (
        torch.xlogy(q, q) - torch.xlogy(q, m)
    ).sum(-1)
    return divergence.clamp(min=0).sqrt()


def top_blocks(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[..., n]`` bool: the ``keep[...]`` highest-scoring entries of each row
    (ties broken towards the lower index)."""
    order = scores.sort(dim=-1, descending=True, stable=True).indices
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return rank < keep[..., None]


def vertical_slash_mask(
    columns: torch.Tensor, offsets: torch.Tensor, geo: ChunkGeometry
) -> torch.Tensor:
    """``columns, offsets [H, num_k_blocks]`` bool ->
    ``[H, num_q_blocks, num_k_blocks]``: a chosen column ``c`` on every query block
    ``r >= c``, a chosen offset ``s`` on every pair ``(r, r - s)``."""
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks, device=columns.device)
    rows = rows[:, None]
    cols = torch.arange(geo.num_k_blocks, device=columns.device)[None, :]
    causal = cols <= rows
    offset = (rows - cols).clamp(min=0)  # [nqb, nkb]
    on_slash = offsets[:, offset]  # [H, nqb, nkb]
    return causal & (columns[:, None, :] | on_slash)


def query_aware_grid(
    q: torch.Tensor, k: torch.Tensor, geo: ChunkGeometry, scale: float
) -> torch.Tensor:
    """``[H, num_q_blocks, num_k_blocks]``: causal row-softmax of pooled queries against
    pooled keys (each row sums to 1; blocks above the diagonal are 0)."""
    B = geo.block_size
    q_means = block_means(q, geo.context_len, B, geo.num_q_blocks)  # [H, nqb, D]
    # [H, nkb, D]
    k_means = block_means(expand_kv_heads(k, q.shape[1]), 0, B, geo.num_k_blocks)
    logits = q_means @ k_means.transpose(1, 2) * scale
    return torch.softmax(
        logits.masked_fill(~geo.causal_block_mask(q.device), float("-inf")), dim=-1
    )


def query_aware_mask(
    q: torch.Tensor, k: torch.Tensor, geo: ChunkGeometry, scale: float, gamma: float
) -> torch.Tensor:
    """``[H, num_q_blocks, num_k_blocks]`` bool: global top-mass pick over the
    query-aware grid, i.e. every causal block scoring at least the block at which the
    cumulative mass reaches ``gamma`` times the number of rows."""
    grid = query_aware_grid(q, k, geo, scale)
    _, threshold = top_mass(grid.flatten(1), gamma)
    return geo.causal_block_mask(q.device) & (grid >= threshold[:, None, None])


def search(
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    config: FlexPrefillConfig,
    scale: float,
) -> tuple[torch.Tensor, list[Pattern]]:
    """Steps 1-5: ``([Hq, num_q_blocks, num_k_blocks] bool mask, per-head pattern)``."""
    scores = probe_scores(q, k, geo, scale)
    n_vertical = budget_blocks(
        top_mass(scores.vertical_tokens, config.gamma)[0], config, geo.num_k_blocks
    )
    n_slash = budget_blocks(
        top_mass(scores.slash_tokens, config.gamma)[0], config, geo.num_k_blocks
    )

    query_aware = is_query_aware(
        q[-geo.probe_len :], k, geo, scale, scores.vertical_blocks, config.tau
    )

    min_blocks = config.budget_limits(geo.num_k_blocks)[0]
    n_vertical = torch.where(query_aware, min_blocks, n_vertical)
    n_slash = torch.where(query_aware, min_blocks, n_slash)
    forced = torch.zeros_like(scores.vertical_blocks)
    forced[:, 0] = float("inf")  # column 0 (the sink) and offset 0 (the diagonal)
    columns = top_blocks(scores.vertical_blocks + forced, n_vertical)
    offsets = top_blocks(scores.slash_blocks + forced, n_slash)
    mask = vertical_slash_mask(columns, offsets, geo)
    if query_aware.any():
        mask |= query_aware[:, None, None] & query_aware_mask(
            q, k, geo, scale, config.gamma
        )
    return mask, patterns_of(query_aware)


def is_query_aware(
    probe: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    scale: float,
    probe_masses: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Step 3, ``[H]`` bool: the probe queries' ``[n, H, D]`` mean against the
    key-block means, softmaxed, within JS distance ``tau`` of the probe's own block
    masses ``[H, nkb]``."""
    probe_mean = probe.to(compute_dtype(probe)).mean(0)  # [H, D]
    k_means = block_means(
        expand_kv_heads(k, probe.shape[1]), 0, geo.block_size, geo.num_k_blocks
    )
    estimate = torch.softmax(
        torch.einsum("hd,hnd->hn", probe_mean, k_means) * scale, dim=-1
    )
    return js_distance(estimate, probe_masses) < tau


def patterns_of(query_aware: torch.Tensor) -> list[Pattern]:
    return [
        Pattern.QUERY_AWARE if qa else Pattern.VERTICAL_SLASH
        for qa in query_aware.tolist()
    ]


def segment_block_masses(
    q: torch.Tensor, k: torch.Tensor, geo: ChunkGeometry, scale: float
) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """The vsgrid probes: per segment of the chunk's query blocks
    (``geo.segments(SEGMENTS)``), ``(first row, last row, positions [n], masses [H,
    nkb])``: the absolute positions of the segment's probe rows
    (``geo.segment_probe(last row, SEGMENT_PROBE_ROWS)``) and ``masses[h, c]``, the
    mean over them of their causal softmax's mass on key block ``c``."""
    dt = compute_dtype(q)
    k = expand_kv_heads(k, q.shape[1]).to(dt)
    keys = torch.arange(geo.kv_len, device=q.device)
    found = []
    for first, last in geo.segments(SEGMENTS):
        end, stride, count = geo.segment_probe(last, SEGMENT_PROBE_ROWS)
        pos = end - stride * torch.arange(count - 1, -1, -1, device=q.device)
        logits = torch.einsum("nhd,khd->hnk", q[pos - geo.context_len].to(dt), k)
        visible = keys[None, :] <= pos[:, None]
        p = torch.softmax((logits * scale).masked_fill(~visible, float("-inf")), -1)
        masses = block_sums(p.mean(1), geo.block_size, geo.num_k_blocks)
        found.append((first, last, pos, masses))
    return found


def probe_read(
    masses: torch.Tensor, probe_row: int, rows: torch.Tensor, num_k_blocks: int
) -> torch.Tensor:
    """``[H, len(rows), num_k_blocks]`` float64: a probe's block masses ``masses [H,
    num_k_blocks]``, taken at absolute block row ``a_e = probe_row``, read at each
    absolute block row ``a_r`` of ``rows`` as a vertical and as a slash: ``m[c] +
    m[c + a_e - a_r]`` for ``c <= a_r`` (its block diagonal ``a_r - c`` is the
    probe's ``a_e - (c + a_e - a_r)``), 0 above the diagonal, normalised over the
    row."""
    masses = masses.double()
    cols = torch.arange(num_k_blocks, device=masses.device)
    slash_col = (cols[None, :] + (probe_row - rows)[:, None]).clamp(0, num_k_blocks - 1)
    read = (masses[:, None, :] + masses[:, slash_col]).masked_fill(
        cols[None, None, :] > rows[None, :, None], 0
    )
    return read / read.sum(-1, keepdim=True)


def pooled_weight_candidates(device: torch.device | str = "cpu") -> torch.Tensor:
    """``[POOLED_WEIGHTS]`` float64: the pooled weights a head may get, evenly spaced
    in ``[MIN_POOLED_WEIGHT, 1]``."""
    return torch.linspace(
        MIN_POOLED_WEIGHT, 1, POOLED_WEIGHTS, dtype=torch.float64, device=device
    )


def held_out_likelihood(
    segments: list[tuple[int, int, torch.Tensor, torch.Tensor]],
    grid: torch.Tensor,
    geo: ChunkGeometry,
) -> torch.Tensor:
    """``[POOLED_WEIGHTS, H]`` float64: for each candidate pooled weight ``w``
    (:func:`pooled_weight_candidates`), how well ``(1 - w) read + w grid`` predicts
    the probe rows held out. Segment ``i``'s probe row is held out: the next
    segment's probe read there (:func:`probe_read`; one segment back, the farthest a
    segment's own probe reaches) and its row of ``grid [H, num_q_blocks,
    num_k_blocks]`` predict its measured block masses ``m_i``; the likelihood is
    ``sum_i sum_c m_i[c] log((1 - w) read_i[c] + w grid_i[c] + LIKELIHOOD_FLOOR)``
    (0 for a chunk of one segment: nothing to hold out)."""
    weights = pooled_weight_candidates(grid.device)[:, None, None]
    likelihood = torch.zeros(
        POOLED_WEIGHTS, grid.shape[0], dtype=torch.float64, device=grid.device
    )
    first = geo.first_q_block
    for (_, row, _, held_out), (_, next_row, _, masses) in pairwise(segments):
        at = torch.tensor([first + row], device=grid.device)
        read = probe_read(masses, first + next_row, at, geo.num_k_blocks)[:, 0]
        mix = (1 - weights) * read + weights * grid[:, row].double()
        likelihood += (held_out.double() * torch.log(mix + LIKELIHOOD_FLOOR)).sum(-1)
    return likelihood


def pooled_weights(
    segments: list[tuple[int, int, torch.Tensor, torch.Tensor]],
    grid: torch.Tensor,
    geo: ChunkGeometry,
) -> torch.Tensor:
    """``[H]`` float64: each head's weight of the pooled grid in the vsgrid estimate,
    the candidate of largest :func:`held_out_likelihood` (the first of equals, so
    ``MIN_POOLED_WEIGHT`` without a held-out row). A head whose blocks follow
    content, not position, gets a large one."""
    likelihood = held_out_likelihood(segments, grid, geo)
    return pooled_weight_candidates(grid.device)[likelihood.argmax(0)]


def vsgrid_estimate(
    segments: list[tuple[int, int, torch.Tensor, torch.Tensor]],
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    scale: float,
) -> torch.Tensor:
    """``[H, num_q_blocks, num_k_blocks]`` float64 from the probes' ``segments``
    (:func:`segment_block_masses`): each query block's estimated attention mass on
    each key block (0 above the diagonal), ``(1 - w) read + w grid``: its segment's
    probe read (:func:`probe_read`) and its row of the pooled query-aware grid, mixed
    by its head's pooled weight ``w`` (:func:`pooled_weights`)."""
    grid = query_aware_grid(q, k, geo, scale).double()
    read = torch.zeros_like(grid)
    offset = geo.first_q_block  # segments count rows from the chunk's first block
    for first, last, _, masses in segments:
        rows = torch.arange(offset + first, offset + last + 1, device=q.device)
        read[:, first : last + 1] = probe_read(
            masses, offset + last, rows, geo.num_k_blocks
        )
    weight = pooled_weights(segments, grid, geo)[:, None, None]
    return (1 - weight) * read + weight * grid


def sampled_positions(geo: ChunkGeometry) -> torch.Tensor:
    """``[num_q_blocks, RERANK_QUERIES]`` absolute positions of each query block's
    sampled queries: every ``B / RERANK_QUERIES``-th position of the (absolute) block,
    ending at its last, clamped into the chunk."""
    step = geo.block_size // RERANK_QUERIES
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
    pos = (
        rows[:, None] * geo.block_size + torch.arange(RERANK_QUERIES) * step + step - 1
    )
    return pos.clamp(geo.context_len, geo.kv_len - 1)


def forced_blocks(
    geo: ChunkGeometry, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[num_q_blocks, num_k_blocks]`` bool: the blocks every vsgrid (and rerank) row
    keeps, the sink and its ``LOCAL_BLOCKS`` nearest key blocks (the diagonal and the
    one before it)."""
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks, device=device)
    cols = torch.arange(geo.num_k_blocks, device=device)
    near = rows[:, None] - cols[None, :] < LOCAL_BLOCKS
    return geo.causal_block_mask(device) & ((cols[None, :] == 0) | near)


def sampled_block_masses(
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    scale: float,
    candidates: torch.Tensor,
) -> torch.Tensor:
    """``[H, num_q_blocks, num_k_blocks]`` float64: per query block, the mean over its
    sampled queries (:func:`sampled_positions`) of each query's attention on each of the
    row's ``candidates [H, num_q_blocks, num_k_blocks]`` (bool, causal), relative to its
    attention on the row's :func:`forced_blocks`: the sum over the block's keys at or
    before the query of ``exp(scale q . k - n)``, ``n`` the log-sum-exp of the query's
    scaled logits on the forced blocks' keys. So the forced blocks' masses sum to 1, and
    a kernel knows each query's normaliser from three key tiles before it reads the
    candidates once. 0 off the candidates."""
    dt = compute_dtype(q)
    H, nk = q.shape[1], geo.num_k_blocks
    k = expand_kv_heads(k, H).to(dt)
    keys = torch.arange(geo.kv_len, device=q.device)
    key_block = keys // geo.block_size
    positions = sampled_positions(geo).to(q.device)  # [nq, S]
    forced = forced_blocks(geo, q.device)
    out = torch.zeros(candidates.shape, dtype=torch.float64, device=q.device)
    # 64 query blocks at a time keep the [blocks, S, kv_len] scores small
    for rows in torch.arange(geo.num_q_blocks, device=q.device).split(64):
        pos = positions[rows]
        visible = keys <= pos[:, :, None]
        local = visible & forced[rows][:, None, key_block]
        for h in range(H):
            logits = torch.einsum(
                "nsd,kd->nsk", q[pos - geo.context_len, h].to(dt), k[:, h]
            )
            logits = logits * scale
            norm = torch.logsumexp(logits.masked_fill(~local, float("-inf")), -1)
            allowed = visible & candidates[h, rows][:, None, key_block]
            p = (logits - norm[..., None]).exp().masked_fill(~allowed, 0.0)
            sums = torch.zeros(*p.shape[:2], nk, dtype=dt, device=q.device)
            out[h, rows] = sums.index_add_(2, key_block, p).mean(1).double()
    return out * candidates


def rerank_candidates(
    geo: ChunkGeometry,
    estimate: torch.Tensor,
    threshold: torch.Tensor,
    forced: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(count [H, num_q_blocks], candidates [H, num_q_blocks, num_k_blocks] bool)``:
    how many blocks vsgrid's ``threshold`` takes of each row's ``estimate`` (the
    entries at or above it), and the row's candidates for :func:`reranked`: the
    ``RERANK_WIDTH`` x count causal entries the estimate ranks highest (every tie too)
    and the ``forced`` blocks."""
    causal = geo.causal_block_mask(estimate.device)
    count = (estimate >= threshold[..., None]).sum(-1)
    wide = (RERANK_WIDTH * count).clamp(max=geo.num_k_blocks)
    widest = estimate.sort(-1, descending=True).values.gather(-1, (wide - 1)[..., None])
    return count, causal & ((estimate >= widest) | forced)


def reranked(
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    scale: float,
    estimate: torch.Tensor,
    threshold: torch.Tensor,
    forced: torch.Tensor,
    budget: str = "row",
) -> torch.Tensor:
    """``selection: rerank``'s pick, ``[H, num_q_blocks, num_k_blocks]`` bool: each row
    of a head is given as many blocks as vsgrid's ``threshold [H, num_q_blocks]`` takes
    of its ``estimate``; its sampled queries' masses (:func:`sampled_block_masses`)
    rank its candidates (:func:`rerank_candidates`); the ``forced`` blocks (bool,
    causal) stay. ``budget`` (``rerank_budget``): ``"row"``: each row keeps its count of
    the candidates of most mass; ``"head"``: the head keeps the sum of its rows' counts,
    the candidates of largest share of their row's candidates' mass over all its rows.
    Every block tied with the last one kept stays too, none of no mass."""
    count, candidates = rerank_candidates(geo, estimate, threshold, forced)
    masses = sampled_block_masses(q, k, geo, scale, candidates)
    keep = torch.minimum(count, candidates.sum(-1))  # [H, num_q_blocks]
    if budget == "head":
        masses = masses / masses.sum(-1, keepdim=True).clamp_min(1e-300)
        ranked = masses.masked_fill(~candidates, -1.0).flatten(1)
        ranked = ranked.sort(-1, descending=True).values
        last = ranked.gather(-1, (keep.sum(-1) - 1)[:, None])[..., None]
    else:
        ranked = masses.masked_fill(~candidates, -1.0).sort(-1, descending=True).values
        last = ranked.gather(-1, (keep - 1)[..., None])
    return forced | (candidates & (masses >= last) & (masses > 0))


def vsgrid_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    config: FlexPrefillConfig,
    scale: float,
) -> tuple[list, torch.Tensor, torch.Tensor]:
    """``(segments, estimate, threshold)``: the segments' probe masses
    (:func:`segment_block_masses`), each row's estimate ``[H, num_q_blocks,
    num_k_blocks]`` (:func:`vsgrid_estimate`) and the value ``[H, num_q_blocks]`` at
    or above which its entries reach ``gamma`` of the row's mass, clamped to the
    budgets (:func:`top_mass`)."""
    segments = segment_block_masses(q, k, geo, scale)
    estimate = vsgrid_estimate(segments, q, k, geo, scale)
    low, high = config.budget_limits(geo.num_k_blocks)
    _, threshold = top_mass(estimate, config.gamma, at_least=low, at_most=high)
    return segments, estimate, threshold


def vsgrid_search(
    q: torch.Tensor,
    k: torch.Tensor,
    geo: ChunkGeometry,
    config: FlexPrefillConfig,
    scale: float,
) -> tuple[torch.Tensor, list[Pattern]]:
    """``selection: vsgrid``: per head and query block, the fewest key blocks whose
    estimated mass (:func:`vsgrid_estimate`) reaches ``gamma`` of the row's, at least
    ``ceil(min_budget / B)`` and at most ``ceil(max_budget / B)``, plus the sink and
    the ``LOCAL_BLOCKS`` nearest blocks (the diagonal and the one before it).
    ``selection: rerank``: as many blocks, chosen by :func:`reranked`.
    Patterns: the paper's JS test on the last segment's probe (reported; every head's
    rows mix both estimates)."""
    segments, estimate, threshold = vsgrid_rows(q, k, geo, config, scale)
    causal = geo.causal_block_mask(q.device)
    forced = forced_blocks(geo, q.device)
    if config.selection == "rerank":
        kept = reranked(
            q, k, geo, scale, estimate, threshold, forced, config.rerank_budget
        )
    else:
        kept = estimate >= threshold[..., None]
    mask = causal & (kept | forced)
    *_, pos, masses = segments[-1]
    query_aware = is_query_aware(
        q[pos - geo.context_len], k, geo, scale, masses, config.tau
    )
    return mask, patterns_of(query_aware)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    geo: ChunkGeometry,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention restricted to the selected block pairs.

    ``mask [Hq, num_q_blocks, num_k_blocks]`` bool (every row needs its diagonal block).
    Returns ``out [q_len, Hq, D]`` in q's dtype and ``lse [q_len, Hq]`` float32/64.
    """
    dt = compute_dtype(q)
    B = geo.block_size
    q_pos = torch.arange(geo.context_len, geo.kv_len, device=q.device)
    k_pos = torch.arange(geo.kv_len, device=q.device)
    q_block = q_pos // B - geo.first_q_block
    k_block = k_pos // B
    causal = k_pos[None, :] <= q_pos[:, None]
    k, v = expand_kv_heads(k, q.shape[1]), expand_kv_heads(v, q.shape[1])
    out = torch.empty(q.shape, dtype=dt, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=dt, device=q.device)
    for h in range(
        q.shape[1]
    ):  # one head at a time keeps the [q_len, kv_len] scores small
        allowed = causal & mask[h][q_block][:, k_block]
        logits = (q[:, h].to(dt) @ k[:, h].to(dt).T) * scale
        logits = logits.masked_fill(~allowed, float("-inf"))
        lse[:, h] = torch.logsumexp(logits, dim=-1)
        out[:, h] = torch.exp(logits - lse[:, h, None]) @ v[:, h].to(dt)
    return out.to(q.dtype), lse


def flex_prefill_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    config: FlexPrefillConfig,
    scale: float,
    hopper_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, RequestStats]:
    """FlexPrefill for one request: ``(out [q_len, Hq, D], lse [q_len, Hq], stats)``.
    ``hopper_kernel``: with ``max_density: auto``, whose break-even decides which
    selections run dense, the Hopper attention kernel's or (default) the portable
    one's (the kernels know which of them runs)."""
    geo = ChunkGeometry(q.shape[0], k.shape[0], config.block_size)
    causal = geo.causal_block_mask(q.device)
    with torch.no_grad():
        heads = q.shape[1]
        sparse = config.runs_sparse(geo.q_len, geo.kv_len)
        if sparse:
            select = search if config.selection == "paper" else vsgrid_search
            mask, patterns = select(q, k, geo, config, scale)
            selected = int((mask & causal).sum())
            sparse = selected <= config.max_selected(
                heads, geo.num_causal_pairs, geo.kv_len, hopper_kernel
            )
        if not sparse:
            mask, patterns = (
                causal.expand(heads, -1, -1).clone(),
                [Pattern.DENSE] * heads,
            )
        out, lse = block_sparse_attention(q, k, v, mask, geo, scale)
    return out, lse, RequestStats.of(patterns, mask, geo)
