"""FlexPrefill's pattern search for a whole batch, on the device, with no host
synchronisation and no Python loop over heads or requests.

Kernels do the heavy parts (the probe, pooling, the top-mass selections, the
query-aware grid, the block lists); the glue in between is a handful of batched torch
ops on ``[R, Hq, ...]`` tensors (budgets, the JS distance, the stable top-k of block
scores). Every step mirrors a function of ``vllm_flexprefill/reference.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_flexprefill.config import FlexPrefillConfig
from vllm_flexprefill.reference import js_distance, top_blocks

from .block_index import build_block_index
from .plan import KVSource, SparsePlan
from .pooling import key_block_means, query_block_means
from .probe import probe
from .query_aware import query_aware_grid
from .top_mass import top_mass

VERTICAL_SLASH, QUERY_AWARE, DENSE = 0, 1, 2  # pattern codes


@dataclass
class SearchResult:
    kv_index: torch.Tensor  # [Hq, T, max_k_blocks] int32, sorted key blocks, diagonal last
    kv_count: torch.Tensor  # [Hq, T] int32
    pattern: torch.Tensor  # [R, Hq] int8 pattern code


def budget_limits(plan: SparsePlan, config: FlexPrefillConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per request ``(min, max)`` budgets in blocks ``[R]`` (see ``reference.budget_limits``)."""
    B = config.block_size
    num_k_blocks = (plan.kv_len + B - 1) // B
    high = num_k_blocks if config.max_budget is None else num_k_blocks.clamp(max=-(-config.max_budget // B))
    low = torch.minimum(high, torch.full_like(high, -(-config.min_budget // B)))
    return low, high


def find_blocks(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, config: FlexPrefillConfig, scale: float, dense: torch.Tensor
) -> SearchResult:
    """Select the blocks of every (request, query head). ``dense [R]`` bool: requests that
    take every causal block (their search results are ignored)."""
    R, Hq, D = plan.num_requests, q.shape[1], q.shape[2]
    B, W = plan.block_size, plan.max_k_blocks
    scores = probe(q, kv, plan, scale)

    # Budgets: the fewest tokens reaching gamma, as blocks, clamped. Rows of the ragged
    # [2, Hq, total_kv] scores: (vertical | slash, request, head).
    heads = torch.arange(Hq, device=q.device)
    token_rows = (torch.arange(2, device=q.device)[:, None, None] * Hq + heads) * plan.total_kv_len
    token_rows = (token_rows + plan.kv_offset[:-1, None]).view(-1)  # [2 * R * Hq] int64
    token_lens = plan.kv_len.repeat_interleave(Hq).repeat(2)
    counts, _ = top_mass(scores.tokens, token_rows, token_lens, plan.max_kv_len, config.gamma)
    low, high = budget_limits(plan, config)
    budgets = (counts.view(2, R, Hq) // B + 1).clamp(min=low[:, None], max=high[:, None])

    # Pattern: JS distance between the pooled estimate and the probe's block distribution.
    key_means = key_block_means(kv, plan, D)  # [R, Hkv, W, D]
    group = Hq // kv.num_kv_heads
    logits = torch.einsum("rkgd,rkwd->rkgw", scores.probe_mean.view(R, -1, group, D), key_means).reshape(R, Hq, W)
    valid = torch.arange(W, device=q.device) < ((plan.kv_len + B - 1) // B)[:, None]  # [R, W] real key blocks
    estimate = torch.softmax((logits * scale).masked_fill(~valid[:, None, :], float("-inf")), dim=-1)
    query_aware = (js_distance(estimate, scores.vertical_blocks) < config.tau) & ~dense[:, None]
    budgets = torch.where(query_aware, low[:, None], budgets)

    # Vertical-slash: top columns (sink forced) and top offsets (diagonal forced).
    blocks = torch.arange(W, device=q.device)
    forced = torch.where(blocks == 0, float("inf"), 0.0)
    invalid = torch.where(valid, 0.0, float("-inf"))[:, None, :]
    columns = top_blocks(scores.vertical_blocks + forced + invalid, budgets[0])
    offsets = top_blocks(scores.slash_blocks + forced + invalid, budgets[1])

    # Query-aware: the global top-mass pick over the pooled grid; request i's rows of head
    # h are one contiguous run of [Hq, T, W].
    grid = query_aware_grid(query_block_means(q, plan, query_aware), key_means, query_aware, plan, scale)
    grid_rows = (heads * plan.num_q_blocks + plan.q_block_offset[:-1, None]).view(-1) * W  # [R * Hq]
    grid_lens = ((plan.q_block_offset[1:] - plan.q_block_offset[:-1]) * W).repeat_interleave(Hq)
    _, threshold = top_mass(grid, grid_rows, grid_lens, plan.max_q_blocks * W, config.gamma,
                            active=query_aware.view(-1))

    kv_index, kv_count = build_block_index(
        plan, columns, offsets, query_aware, grid, threshold.view(R, Hq), dense
    )
    pattern = torch.where(dense[:, None], DENSE, torch.where(query_aware, QUERY_AWARE, VERTICAL_SLASH))
    return SearchResult(kv_index, kv_count, pattern.to(torch.int8))
