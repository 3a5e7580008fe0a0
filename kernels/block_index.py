"""Turn per-head selections into the sorted key-block lists the attention kernel walks.

For head ``h`` and global query block ``g`` (absolute block ``r`` of request ``i``), key
block ``c <= r`` is selected when any of these holds:

* ``c`` is one of the head's vertical columns;
* ``r - c`` is one of the head's slash offsets;
* the head reads the grid (a query-aware head, or any head of a ``vsgrid`` request)
  and ``grid[h, g, c]`` reaches the row's threshold ``threshold[h, g]``.

One program per (head, query block) scans the candidates ``0..r`` a chunk at a time and
compacts the selected ones with a prefix sum, so the list comes out sorted, with the
diagonal block ``r`` (always selected) last. The rows of requests that run dense are
then rewritten with every causal block (:func:`take_every_block`, also the search's
step for requests its selections make dense).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv

from .plan import SparsePlan


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=[
        "stride_sel_r",
        "stride_sel_h",
        "stride_grid_h",
        "stride_grid_g",
        "stride_th",
        "stride_ih",
        "stride_ib",
        "stride_ch",
    ],
    do_not_specialize_on_alignment=["offsets_ptr", "threshold_ptr"],
)
def _block_index_kernel(
    columns_ptr, offsets_ptr,  # [R, Hq, >= max_k_blocks] int8
    stride_sel_r, stride_sel_h,
    from_grid_ptr, stride_fg_r,  # [R, Hq] int8
    grid_ptr, stride_grid_h, stride_grid_g,  # [Hq, T, max_k_blocks] float32
    threshold_ptr, stride_th,  # [Hq, T] float32
    block_request, block_row,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,
    CHUNK: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    g = tl.program_id(1)
    req = tl.load(block_request + g)
    r = tl.load(block_row + g)
    from_grid = tl.load(from_grid_ptr + req * stride_fg_r + h) != 0
    threshold = tl.load(threshold_ptr + h.to(tl.int64) * stride_th + g)
    sel_base = req.to(tl.int64) * stride_sel_r + h * stride_sel_h
    grid_row = (
        grid_ptr + h.to(tl.int64) * stride_grid_h + g.to(tl.int64) * stride_grid_g
    )
    index_row = index_ptr + h.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib

    found = tl.full([], 0, tl.int32)
    for start in range(0, r + 1, CHUNK):
        c = start + tl.arange(0, CHUNK)
        causal = c <= r
        chosen = tl.load(columns_ptr + sel_base + c, mask=causal, other=0) != 0
        chosen |= tl.load(offsets_ptr + sel_base + (r - c), mask=causal, other=0) != 0
        if from_grid:
            chosen |= tl.load(grid_row + c, mask=causal, other=0.0) >= threshold
        chosen &= causal
        slot = found + tl.cumsum(chosen.to(tl.int32), 0) - 1
        tl.store(index_row + slot, c, mask=chosen)
        found += tl.sum(chosen.to(tl.int32), 0)
    tl.store(count_ptr + h.to(tl.int64) * stride_ch + g, found)


@triton.jit(do_not_specialize=["num_heads", "stride_ih", "stride_ib", "stride_ch"])
def _every_block_kernel(
    dense_ptr,  # [R] int8
    block_request, block_row, num_heads,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,
    CHUNK: tl.constexpr,
):  # fmt: skip
    # one program per query block, for every head (a launch of few programs when
    # no request is dense)
    g = tl.program_id(0)
    if tl.load(dense_ptr + tl.load(block_request + g)) == 0:
        return
    r = tl.load(block_row + g)
    index_row = index_ptr + g.to(tl.int64) * stride_ib
    count = count_ptr + g
    for _ in range(num_heads):  # the pointers step a head at a time (64-bit)
        for start in range(0, r + 1, CHUNK):
            c = start + tl.arange(0, CHUNK)
            tl.store(index_row + c, c, mask=c <= r)
        tl.store(count, r + 1)
        index_row += stride_ih
        count += stride_ch


def build_block_index(
    plan: SparsePlan,
    columns: torch.Tensor,
    offsets: torch.Tensor,
    from_grid: torch.Tensor,
    grid: torch.Tensor,
    threshold: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``columns, offsets [R, Hq, max_k_blocks]`` and ``from_grid [R, Hq]`` (the heads
    that read the grid), bool or int8; ``grid [Hq, T, max_k_blocks]`` and its rows'
    ``threshold [Hq, T]``, float32 (read for those heads only).

    Returns ``kv_index [Hq, T, max_k_blocks]`` int32 (sorted lists, unused tail left
    unwritten) and ``kv_count [Hq, T]`` int32.
    """
    R, Hq, width = columns.shape
    kv_index = torch.empty(
        Hq, plan.num_q_blocks, width, dtype=torch.int32, device=columns.device
    )
    kv_count = torch.empty(
        Hq, plan.num_q_blocks, dtype=torch.int32, device=columns.device
    )
    if plan.num_q_blocks == 0:
        return kv_index, kv_count
    as_bytes = lambda t: t.to(torch.int8).contiguous()  # noqa: E731
    columns, offsets, from_grid = (as_bytes(t) for t in (columns, offsets, from_grid))
    threshold = threshold.contiguous()
    _block_index_kernel[(Hq, plan.num_q_blocks)](
        columns, offsets, columns.stride(0), columns.stride(1),
        from_grid, from_grid.stride(0),
        grid, grid.stride(0), grid.stride(1),
        threshold, threshold.stride(0),
        plan.block_request, plan.block_row,
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        CHUNK=128,
        num_warps=4,
    )  # fmt: skip
    return kv_index, kv_count


def take_every_block(
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
    dense: torch.Tensor,
) -> None:
    """Rewrite, in place, the lists of the requests ``dense [R]`` (bool) marks with
    every causal key block; the other rows stay as they are (``kv_index [Hq, T,
    max_k_blocks]``, ``kv_count [Hq, T]`` int32, as :func:`build_block_index` makes
    them)."""
    Hq, T, _ = kv_index.shape
    if T == 0:
        return
    _every_block_kernel[(T,)](
        dense.to(torch.int8), plan.block_request, plan.block_row, Hq,
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        CHUNK=128, num_warps=4,
    )  # fmt: skip


def index_to_masks(
    plan: SparsePlan, kv_index: torch.Tensor, kv_count: torch.Tensor
) -> list[torch.Tensor]:
    """The inverse of :func:`build_block_index`: per request, the
    ``[Hq, num_q_blocks, num_k_blocks]`` bool mask that the lists describe."""
    Hq, _, width = kv_index.shape
    # [Hq, T, width]
    listed = torch.arange(width, device=kv_index.device) < kv_count[..., None]
    masks = torch.zeros(
        Hq, plan.num_q_blocks, width + 1, dtype=torch.bool, device=kv_index.device
    )
    # unlisted slots land in column `width`
    masks.scatter_(2, torch.where(listed, kv_index.long(), width), True)
    offsets = plan.q_block_offset.tolist()
    return [
        masks[:, offsets[i] : offsets[i + 1], : cdiv(kv_len, plan.block_size)]
        for i, kv_len in enumerate(plan.kv_lens)
    ]
