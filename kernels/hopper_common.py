"""What the warp-specialised Gluon kernels for Hopper (``hopper_attention.py``,
``hopper_probe.py``, ``hopper_probe_scores.py``) share: the 128-token block (the
attention kernel also takes 64), the register budgets of their loader and consumer
partitions, the layouts of query tiles and of ``wgmma`` accumulators, staging queries
in shared memory, the bulk copies (TMA) of key and value tiles from contiguous K/V or
vLLM's paged cache, and the test of whether a batch fits them (:func:`supports`).
"""

from __future__ import annotations

import functools

import torch
from triton import constexpr_function
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .kv_access import bulk_copyable, page_view
from .plan import KVSource

BLOCK = gl.constexpr(128)  # query block = key block = key tile (the probes' only one)
CONSUMER_REGISTERS = gl.constexpr(240)  # the most a thread can have
LOADER_REGISTERS = gl.constexpr(24)  # per thread: the loader only moves scalars
# per-thread register cap of the launch: 12 warps (8 consumers, the loader's group)
# x 32 x 168 = 64512 of the SM's 65536, which leaves every consumer thread 240
MAX_REGISTERS = 168


@constexpr_function
def query_layout(head_dim, num_warps):
    """The layout a ``[BLOCK, head_dim]`` query tile is loaded in before
    :func:`stage_queries` stores it: 16 bytes of a row a thread."""
    return gl.BlockedLayout(
        [1, 8], [32 * 8 // head_dim, head_dim // 8], [num_warps, 1], [1, 0]
    )


@constexpr_function
def wgmma_layout(width, num_warps):
    """The register layout of a ``[rows, width]`` ``wgmma`` accumulator over
    ``num_warps`` warps (one warp group: 4)."""
    return gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, width, 16]
    )


@gluon.jit
def stage_queries(q_smem, q_ptr, rows, row_ok, stride_qt, q_layout: gl.constexpr):
    """Load query rows ``rows`` (int64, in ``SliceLayout(1, q_layout)``; zeros where
    not ``row_ok``) of one head (``q_ptr`` at the head) into ``q_smem [BLOCK, D]``, and
    make them visible to the tensor cores."""
    d = gl.arange(0, q_smem.shape[1], layout=gl.SliceLayout(0, q_layout))
    q = gl.load(
        q_ptr + gl.expand_dims(rows * stride_qt, 1) + gl.expand_dims(d, 0),
        mask=gl.expand_dims(row_ok, 1),
        other=0.0,
    )
    q_smem.store(q)
    fence_async_shared()  # generic-proxy writes before the tensor cores read them
    gl.thread_barrier()


@gluon.jit
def load_tile(
    desc, buf, bar, c, kv_len, k_start, table_row_ptr, kvh,
    HEAD_DIM: gl.constexpr, PAGED: gl.constexpr, PAGE_SIZE: gl.constexpr,
):  # fmt: skip
    """Issue the copies of key block ``c``'s ``[TILE, HEAD_DIM]`` tile into ``buf``
    (``TILE`` its first dimension, the block size), one per page it spans (contiguous
    K/V: one), completing on ``bar``. Tokens past the sequence read its last page: any
    finite or stale data, masked later."""
    TILE: gl.constexpr = buf.shape[0]
    if PAGED:
        ROWS: gl.constexpr = TILE if PAGE_SIZE >= TILE else PAGE_SIZE
    else:
        ROWS: gl.constexpr = TILE
    for i in gl.static_range(TILE // ROWS):
        token = c * TILE + i * ROWS
        if PAGED:
            last = gl.minimum(token, kv_len - 1)
            page = gl.load(table_row_ptr + last // PAGE_SIZE)
            coord = [page, token % PAGE_SIZE, kvh * HEAD_DIM]
        else:
            coord = [0, k_start + token, kvh * HEAD_DIM]
        dest = buf.reshape([1, TILE, HEAD_DIM]).slice(i * ROWS, ROWS, dim=1)
        tma.async_copy_global_to_shared(desc, coord, bar, dest)


def supports(
    q: torch.Tensor, kv, block_size: int, blocks: tuple[int, ...] = (BLOCK.value,)
) -> bool:
    """Whether a Hopper kernel whose block sizes are ``blocks`` (the probes': 128)
    covers the batch (else the portable kernels run): its shape is covered
    (:func:`covers`) and K/V are laid out for bulk copies."""
    return (
        kv.value.dtype == kv.key.dtype
        and covers(
            q.device,
            q.dtype,
            kv.key.dtype,
            q.shape[-1],
            block_size,
            kv.page_size if kv.paged else None,
            blocks,
        )  # fmt: skip
        and all(bulk_copyable(t, kv.paged) for t in (kv.key, kv.value))
    )


def covers(
    device: torch.device,
    dtype: torch.dtype,
    kv_dtype: torch.dtype,
    head_dim: int,
    block_size: int,
    page_size: int | None,
    blocks: tuple[int, ...],
) -> bool:
    """Whether a Hopper kernel whose block sizes are ``blocks`` covers batches of this
    shape, their K/V laid out for bulk copies: a Hopper GPU, 16-bit queries, keys and
    values of one type, head dim 64 or 128, ``block_size`` in ``blocks``, pages
    (``page_size`` tokens; None: contiguous K/V) that tile a block in whole copies of
    16 tokens or more."""
    return (
        is_hopper(device)
        and dtype in (torch.bfloat16, torch.float16)
        and kv_dtype == dtype
        and head_dim in (64, 128)
        and block_size in blocks
        and (page_size is None or _whole_copies(page_size, block_size))
    )


@functools.cache
def is_hopper(device: torch.device) -> bool:
    """sm_90 (H100, H200): the GPUs with both TMA and wgmma."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def _whole_copies(page_size: int, tile: int) -> bool:
    """A tile of ``tile`` tokens is whole pages of 16 tokens or more, or lies inside
    one page."""
    return page_size % tile == 0 or (page_size >= 16 and tile % page_size == 0)


def tile_descriptor(cache: torch.Tensor, paged: bool, rows: int) -> TensorDescriptor:
    """A 3-D bulk-copy descriptor ``[pages, tokens per page, Hkv * D]`` with
    ``[1, rows, D]`` boxes in the tiles' shared-memory layout (contiguous K/V: one page
    holding every token)."""
    view = page_view(cache, paged)
    head_dim = cache.shape[-1]
    layout = gl.NVMMASharedLayout.get_default_for(
        [1, rows, head_dim], _GL_TYPES[cache.dtype]
    )
    return TensorDescriptor(
        view,
        shape=list(view.shape),
        strides=list(view.stride()),
        block_shape=[1, rows, head_dim],
        layout=layout,
    )


_GL_TYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def copy_rows(kv: KVSource, tile: int = BLOCK.value) -> int:
    """Tokens one bulk copy of a ``tile``-token tile brings: a page, at most the whole
    tile (contiguous K/V: the tile)."""
    return min(kv.page_size, tile) if kv.paged else tile
