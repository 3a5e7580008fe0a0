"""Addressing shared by the kernels: keys and values in a contiguous
``[tokens, Hkv, D]`` tensor or in vLLM's paged cache ``[pages, page_size, Hkv, D]`` (see
``KVSource``), and the request that owns a global query block (see ``SparsePlan``)."""

import torch
import triton
import triton.language as tl


def page_view(cache: torch.Tensor, paged: bool) -> torch.Tensor:
    """K or V as the bulk copies address it: ``[pages, tokens per page, Hkv * D]``
    (contiguous K/V: one page holding every token). A view only where
    :func:`bulk_copyable` holds (elsewhere ``flatten`` would copy the cache)."""
    return cache.flatten(2) if paged else cache.flatten(1).unsqueeze(0)


def bulk_copyable(cache: torch.Tensor, paged: bool) -> bool:
    """Whether bulk copies can read ``cache`` (K or V, as :class:`KVSource` holds it)
    in place: a 16-byte aligned base, each token's heads side by side (vLLM's NHD
    layout; not its HND one) and 16-byte aligned strides between tokens (and pages)."""
    outer = cache.stride()[:2] if paged else cache.stride()[:1]
    return (
        cache.data_ptr() % 16 == 0
        and cache.stride(-1) == 1
        and cache.stride(-2) == cache.shape[-1]
        and all(stride * cache.element_size() % 16 == 0 for stride in outer)
    )


@triton.jit
def token_offsets(
    tokens,  # int tensor of token positions within the request's sequence
    valid,  # bool mask of the same shape: positions < kv_len
    k_start,  # contiguous: first row of the request's keys
    table_row_ptr,  # paged: pointer to the request's block-table row
    stride_page,  # contiguous: row stride; paged: page stride
    stride_slot,  # paged: stride between tokens of one page
    PAGED: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
):
    """Element offsets (int64) of the tokens' rows; invalid tokens map to offset 0."""
    if PAGED:
        page = tl.load(table_row_ptr + tokens // PAGE_SIZE, mask=valid, other=0).to(
            tl.int64
        )
        return tl.where(
            valid,
            page * stride_page + (tokens % PAGE_SIZE).to(tl.int64) * stride_slot,
            0,
        )
    else:
        return tl.where(valid, (k_start + tokens).to(tl.int64) * stride_page, 0)


@triton.jit
def load_key_tile(
    k_ptr, kv_head_offset, keys, key_ok, k_start, table_row_ptr, stride_page,
    stride_slot, d, d_ok, PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
):  # fmt: skip
    """The keys ``keys [N]`` of one KV head (``kv_head_offset``: its element offset)
    as ``[N, BLOCK_D]``, zero where ``key_ok`` or ``d_ok`` is false."""
    rows = token_offsets(
        keys, key_ok, k_start, table_row_ptr, stride_page, stride_slot, PAGED, PAGE_SIZE
    )
    return tl.load(
        k_ptr + rows[:, None] + kv_head_offset + d[None, :],
        mask=key_ok[:, None] & d_ok[None, :],
        other=0.0,
    )


@triton.jit
def query_block_owner(block_request, block_row, head_flags_ptr, stride_flags_r):
    """For a program of a (global query block, head) grid: ``(g, h, request, absolute
    block index, whether head h's flag is set for that request)`` (``head_flags [R,
    Hq]`` int8)."""
    g = tl.program_id(0)
    h = tl.program_id(1)
    req = tl.load(block_request + g)
    flagged = tl.load(head_flags_ptr + req * stride_flags_r + h) != 0
    return g, h, req, tl.load(block_row + g), flagged
