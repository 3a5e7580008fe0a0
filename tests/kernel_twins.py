"""PyTorch twins of the Triton kernels: each takes the kernel's batched arguments apart
into requests (:func:`requests`) and runs the oracle, ``vllm_flexprefill/reference.py``,
on each.

The kernels never import the oracle; these twins are the only bridge, so a kernel and
its twin share no code but the batch layout they both read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vllm_flexprefill import reference
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.kernels import KVSource, SparsePlan, index_to_masks
from vllm_flexprefill.kernels.probe import ProbeOutput


@dataclass
class Request:
    """Request ``index`` of a plan: its rows of ``q``, its keys and values (contiguous
    copies, on the CPU; fp8 ones dequantised to float32), and where its per-key and
    per-query-block entries sit."""

    index: int
    geo: ChunkGeometry
    rows: slice  # its rows of q / out
    q: torch.Tensor  # [q_len, Hq, D]
    k: torch.Tensor  # [kv_len, Hkv, D]
    v: torch.Tensor
    keys: slice  # its columns of the ragged per-key scores
    q_blocks: slice  # its global query blocks


def requests(q: torch.Tensor, kv: KVSource, plan: SparsePlan) -> Iterator[Request]:
    """The plan's requests in order, read from ``q`` and from contiguous
    or paged K/V."""
    q_starts, k_starts, table_rows = (
        plan.q_start.tolist(),
        plan.k_start.tolist(),
        plan.table_row.tolist(),
    )
    kv_offsets, block_offsets = plan.kv_offset.tolist(), plan.q_block_offset.tolist()
    for i, (q_len, kv_len) in enumerate(zip(plan.q_lens, plan.kv_lens, strict=True)):
        if kv.paged:
            tokens = torch.arange(kv_len, device=kv.key.device)
            pages = kv.block_table[table_rows[i], tokens // kv.page_size].long()
            k, v = (
                kv.key[pages, tokens % kv.page_size],
                kv.value[pages, tokens % kv.page_size],
            )
        else:
            k, v = (
                kv.key[k_starts[i] : k_starts[i] + kv_len],
                kv.value[k_starts[i] : k_starts[i] + kv_len],
            )
        if kv.key_scale is not None:
            k = k.float() * kv.key_scale
        if kv.value_scale is not None:
            v = v.float() * kv.value_scale
        rows = slice(q_starts[i], q_starts[i] + q_len)
        yield Request(
            i,
            ChunkGeometry(q_len, kv_len, plan.block_size),
            rows,
            q[rows].cpu(),
            k.cpu(),
            v.cpu(),
            slice(kv_offsets[i], kv_offsets[i + 1]),
            slice(block_offsets[i], block_offsets[i + 1]),
        )


def probe_twin(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, scale: float
) -> ProbeOutput:
    """:func:`~vllm_flexprefill.kernels.probe.probe` through
    ``reference.probe_scores``."""
    R, Hq, D = plan.num_requests, q.shape[1], q.shape[2]
    out = ProbeOutput(
        torch.zeros(2, Hq, plan.total_kv_len),
        torch.zeros(2, R, Hq, plan.max_k_blocks),
        torch.zeros(R, Hq, D),
    )
    for r in requests(q, kv, plan):
        scores = reference.probe_scores(r.q.float(), r.k.float(), r.geo, scale)
        nk = r.geo.num_k_blocks
        out.tokens[0, :, r.keys] = scores.vertical_tokens
        out.tokens[1, :, r.keys] = scores.slash_tokens
        out.vertical_blocks[r.index, :, :nk] = scores.vertical_blocks
        out.slash_blocks[r.index, :, :nk] = scores.slash_blocks
        out.probe_mean[r.index] = r.q[-r.geo.probe_len :].float().mean(0)
    return out


def segment_masses_twin(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan, scale: float
) -> torch.Tensor:
    """``segment_block_masses`` through ``reference.segment_block_masses``:
    ``[P, Hq, max_k_blocks]``, requests in order, segments in order."""
    found = []
    for r in requests(q, kv, plan):
        for *_, masses in reference.segment_block_masses(
            r.q.float(), r.k.float(), r.geo, scale
        ):
            found.append(
                torch.nn.functional.pad(
                    masses, (0, plan.max_k_blocks - masses.shape[1])
                )
            )
    return torch.stack(found)


def block_means_twin(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """``key_block_means`` and ``query_block_means`` (every head) through
    ``reference.block_means``: ``(keys, queries)``; key blocks past a request's
    end are 0."""
    B = plan.block_size
    keys = torch.zeros(
        plan.num_requests, kv.num_kv_heads, plan.max_k_blocks, q.shape[2]
    )
    queries = []
    for r in requests(q, kv, plan):
        keys[r.index, :, : r.geo.num_k_blocks] = reference.block_means(
            r.k.float(), 0, B, r.geo.num_k_blocks
        )
        queries.append(
            reference.block_means(
                r.q.float(), r.geo.context_len, B, r.geo.num_q_blocks
            ).transpose(0, 1)
        )
    return keys, torch.cat(queries)


def query_aware_grid_twin(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    query_aware: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``query_aware_grid`` (from the raw q and K/V) through
    ``reference.query_aware_grid``; rows of heads that are not query-aware are 0."""
    grid = torch.zeros(q.shape[1], plan.num_q_blocks, plan.max_k_blocks)
    for r in requests(q, kv, plan):
        rows = reference.query_aware_grid(r.q.float(), r.k.float(), r.geo, scale)
        grid[:, r.q_blocks, : r.geo.num_k_blocks] = (
            rows * query_aware[r.index, :, None, None].cpu()
        )
    return grid


def top_mass_twin(scores, row_start, row_len, max_len, fraction, active=None):
    """``top_mass`` (same arguments) by sorting (``reference.top_mass``) the rows,
    gathered into a zero-padded ``[rows, max_len]``: ``(count, threshold)``."""
    flat = scores.reshape(-1).float().cpu()
    padded = torch.zeros(row_start.shape[0], max_len)
    for i, (start, n) in enumerate(
        zip(row_start.tolist(), row_len.tolist(), strict=True)
    ):
        padded[i, :n] = flat[start : start + n]
    count, threshold = reference.top_mass(padded, fraction)
    count, threshold = count.to(torch.int32), threshold.float()
    if active is not None:
        count = torch.where(active.cpu(), count, 0)
        threshold = torch.where(active.cpu(), threshold, float("inf"))
    return count, threshold


def block_masks_twin(plan, columns, offsets, from_grid, grid, threshold, dense):
    """``build_block_index``'s selection, then the ``dense`` requests' every causal
    block, as per-request ``[Hq, nqb, nkb]`` bool masks, through
    ``reference.vertical_slash_mask``."""
    masks = []
    rows = plan.q_block_offset.tolist()
    for i, (q_len, kv_len) in enumerate(zip(plan.q_lens, plan.kv_lens, strict=True)):
        geo = ChunkGeometry(q_len, kv_len, plan.block_size)
        nk = geo.num_k_blocks
        causal = geo.causal_block_mask(columns.device)
        mask = reference.vertical_slash_mask(
            columns[i, :, :nk], offsets[i, :, :nk], geo
        )
        own = slice(rows[i], rows[i + 1])
        picked = grid[:, own, :nk] >= threshold[:, own, None]
        mask |= from_grid[i, :, None, None] & picked & causal
        masks.append(mask | (dense[i] & causal))
    return masks


def block_sparse_attention_twin(q, kv, plan, kv_index, kv_count, scale):
    """``block_sparse_attention`` (same arguments, without ``out``) through
    ``reference.block_sparse_attention``: ``(out, lse)`` for the plan's rows (other rows
    are 0), on the CPU."""
    out = torch.zeros_like(q, device="cpu")
    lse = torch.zeros(q.shape[:2], dtype=torch.float32)
    masks = index_to_masks(plan, kv_index, kv_count)
    for r in requests(q, kv, plan):
        out[r.rows], request_lse = reference.block_sparse_attention(
            r.q, r.k, r.v, masks[r.index].cpu(), r.geo, scale
        )
        lse[r.rows] = request_lse.float()
    return out, lse
