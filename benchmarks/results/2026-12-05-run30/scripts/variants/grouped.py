"""Run 30's grouped variants of ``selection: rerank``'s sampled-mass kernel, each with the
package's interface (``vllm_flexprefill.kernels.rerank.sampled_block_masses``) and its
output (every listed block's mass in its slot; the selection unchanged), timed against the
package's per-head kernel by ``ab_rerank.py`` (``grouped.py:NAME``).

One program per (KV head, query block): the group's query heads' 16 sampled queries each
as one ``[GROUP_PAD x 16, D]`` tile and their normalisers over the forced blocks
(``_group_rows``), then each block of the union of the heads' sorted lists read once:

* ``grouped``: a ``while`` loop walking the lists (each head's slot taken when its listed
  block is the pass's block), ``[GROUP_PAD x 16, B]`` products;
* ``prefetch``: the same, the next block's key tile loaded while the products run;
* ``head_products``: the same walk, one ``[16, B]`` product per head that lists the block;
* ``union_list``: the walk done first by ``_union_kernel`` into a list (an entry: ``block
  << 16 | the heads' bits``), then a ``for`` loop over it (software-pipelined by Triton)
  with ``[GROUP_PAD x 16, B]`` products.

Run 30 (H200, 128K rerank γ 0.835, search GPU ms): package 19.6, grouped 24.2, prefetch
27.2, head_products 30.1; union_list prepared.
"""

from functools import partial

import torch
import triton
import triton.language as tl

from vllm_flexprefill.kernels.kv_access import load_key_tile
from vllm_flexprefill.kernels.plan import KVSource, SparsePlan
from vllm_flexprefill.kernels.quant import query_key_products, scale_of
from vllm_flexprefill.kernels.rerank import _block_logits, _forced_log_sum_exp
from vllm_flexprefill.kernels.utils import dot_precision
from vllm_flexprefill.selection import RERANK_QUERIES

NONE = tl.constexpr(2**30)  # past every list's end
MODES = {"grouped": 0, "prefetch": 1, "head_products": 2, "union_list": 3}


@triton.jit
def _group_rows(
    q_ptr, stride_qt, stride_qh, q_scale_ptr, k_ptr, stride_kp, stride_ks, stride_kh,
    table_ptr, stride_table, k_scale_ptr, req, r, kv_head,
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    scale_log2, group, local_blocks,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK: tl.constexpr,
    QUERIES: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """The group's sampled queries ``[GROUP_PAD * QUERIES, BLOCK_D]`` (a head's rows in
    turn), their positions and base-2 normalisers over the forced blocks, and the key
    addressing: ``(queries, position, norm, q_rows, kv_h, k_start, table_row_ptr,
    scale_log2)``."""
    ROWS: tl.constexpr = GROUP_PAD * QUERIES
    STEP: tl.constexpr = BLOCK // QUERIES
    kv_len = tl.load(req_kv_len + req)
    context = kv_len - tl.load(req_q_len + req)
    sample = tl.arange(0, ROWS) % QUERIES
    position = r * BLOCK + sample * STEP + STEP - 1
    position = tl.minimum(tl.maximum(position, context), kv_len - 1)
    member = tl.arange(0, ROWS) // QUERIES
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q_rows = (tl.load(req_q_start + req) + position - context).to(tl.int64)
    q_head = kv_head * group + member
    queries = tl.load(
        q_ptr + q_rows[:, None] * stride_qt + q_head[:, None] * stride_qh + d[None, :],
        mask=(member < group)[:, None] & d_ok[None, :],
        other=0.0,
    )
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kv_h = kv_head * stride_kh
    norm = _forced_log_sum_exp(
        queries, position, r, k_ptr, kv_h, k_start, table_row_ptr, stride_kp,
        stride_ks, scale_log2, d, d_ok, local_blocks,
        PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
    )  # fmt: skip
    return queries, position, norm, q_rows, kv_h, k_start, table_row_ptr, scale_log2


@triton.jit
def _group_mass(s, norm, GROUP_PAD: tl.constexpr, QUERIES: tl.constexpr):
    """Each head's mean over its queries of the block's mass: ``[GROUP_PAD]``."""
    row_mass = tl.sum(tl.exp2(s - norm[:, None]), 1)
    return tl.sum(tl.reshape(row_mass, [GROUP_PAD, QUERIES]), 1) / QUERIES


@triton.jit
def _union_kernel(
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,  # [Hq, T, W], [Hq, T]
    union_ptr, union_count_ptr, stride_uh, stride_ub,  # [Hkv, T, W], [Hkv, T] out
    rerank_ptr, block_request, group, GROUP_PAD: tl.constexpr,
):  # fmt: skip
    kv_head = tl.program_id(0)
    g = tl.program_id(1)
    if tl.load(rerank_ptr + tl.load(block_request + g)) == 0:
        return
    members = tl.arange(0, GROUP_PAD)
    head = kv_head * group + members
    n = tl.load(
        count_ptr + head.to(tl.int64) * stride_ch + g, mask=members < group, other=0
    )
    index_row = index_ptr + head.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
    union_row = (
        union_ptr + kv_head.to(tl.int64) * stride_uh + g.to(tl.int64) * stride_ub
    )
    slot = tl.zeros([GROUP_PAD], tl.int32)
    listed = tl.load(index_row + slot, mask=slot < n, other=NONE)
    block = tl.min(listed, 0)
    found = 0
    while block < NONE:
        hit = listed == block
        tl.store(
            union_row + found, (block << 16) | tl.sum(tl.where(hit, 1 << members, 0), 0)
        )
        found += 1
        slot += hit.to(tl.int32)
        listed = tl.load(index_row + slot, mask=slot < n, other=NONE)
        block = tl.min(listed, 0)
    tl.store(union_count_ptr + kv_head.to(tl.int64) * tl.num_programs(1) + g, found)


@triton.jit
def _grouped_mass_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,  # [total_q, Hq, D]
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,  # [Hq, T, W], [Hq, T]
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32 out
    union_ptr, union_count_ptr, stride_uh, stride_ub,  # union_list: [Hkv, T, W], [Hkv, T]
    rerank_ptr, req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    block_request, block_row, scale_log2, group, local_blocks,
    MODE: tl.constexpr, PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK: tl.constexpr, QUERIES: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    kv_head = tl.program_id(0)
    g = tl.program_id(1)
    req = tl.load(block_request + g)
    if tl.load(rerank_ptr + req) == 0:
        return
    r = tl.load(block_row + g)
    queries, position, norm, q_rows, kv_h, k_start, table_row_ptr, scale_log2 = _group_rows(
        q_ptr, stride_qt, stride_qh, q_scale_ptr, k_ptr, stride_kp, stride_ks, stride_kh,
        table_ptr, stride_table, k_scale_ptr, req, r, kv_head,
        req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
        scale_log2, group, local_blocks, PAGED, PAGE_SIZE, BLOCK, QUERIES, GROUP_PAD,
        HEAD_DIM, BLOCK_D, DOT_PRECISION,
    )  # fmt: skip
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    members = tl.arange(0, GROUP_PAD)
    head = kv_head * group + members
    mass_row = masses_ptr + head.to(tl.int64) * stride_sh + g.to(tl.int64) * stride_sg
    slot = tl.zeros([GROUP_PAD], tl.int32)
    if MODE == 3:  # union_list
        union_row = (
            union_ptr + kv_head.to(tl.int64) * stride_uh + g.to(tl.int64) * stride_ub
        )
        u = tl.load(union_count_ptr + kv_head.to(tl.int64) * tl.num_programs(1) + g)
        for i in range(u):
            entry = tl.load(union_row + i)
            s = _block_logits(
                queries, position, entry >> 16, k_ptr, kv_h, k_start, table_row_ptr,
                stride_kp, stride_ks, scale_log2, d, d_ok,
                PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
            )  # fmt: skip
            hit = ((entry >> members) & 1) != 0
            tl.store(
                mass_row + slot, _group_mass(s, norm, GROUP_PAD, QUERIES), mask=hit
            )
            slot += hit.to(tl.int32)
    else:
        n = tl.load(
            count_ptr + head.to(tl.int64) * stride_ch + g, mask=members < group, other=0
        )
        index_row = (
            index_ptr + head.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
        )
        listed = tl.load(index_row + slot, mask=slot < n, other=NONE)
        block = tl.min(listed, 0)
        last_query = tl.max(position, 0)
        if MODE == 1:  # prefetch: the first tile before the loop, each next one in it
            keys = tl.where(block < NONE, block, 0) * BLOCK + tl.arange(0, BLOCK)
            k = load_key_tile(
                k_ptr, kv_h, keys, (keys <= last_query) & (block < NONE), k_start,
                table_row_ptr, stride_kp, stride_ks, d, d_ok, PAGED, PAGE_SIZE,
            )  # fmt: skip
        else:
            k = tl.zeros([BLOCK, BLOCK_D], k_ptr.dtype.element_ty)
        while block < NONE:
            keys = block * BLOCK + tl.arange(0, BLOCK)
            if MODE != 1:
                k = load_key_tile(
                    k_ptr, kv_h, keys, keys <= last_query, k_start, table_row_ptr,
                    stride_kp, stride_ks, d, d_ok, PAGED, PAGE_SIZE,
                )  # fmt: skip
            hit = listed == block
            write_slot = slot
            slot += hit.to(tl.int32)
            listed = tl.load(index_row + slot, mask=slot < n, other=NONE)
            next_block = tl.min(listed, 0)
            next_k = k
            if MODE == 1:
                next_keys = tl.where(next_block < NONE, next_block, 0) * BLOCK
                next_keys += tl.arange(0, BLOCK)
                next_k = load_key_tile(
                    k_ptr, kv_h, next_keys, (next_keys <= last_query) & (next_block < NONE),
                    k_start, table_row_ptr, stride_kp, stride_ks, d, d_ok, PAGED, PAGE_SIZE,
                )  # fmt: skip
            if MODE == 2:  # head_products: a [QUERIES, BLOCK] product per listing head
                q_pos = tl.reshape(position, [GROUP_PAD, QUERIES])
                own_position = tl.sum(tl.where(members[:, None] == 0, q_pos, 0), 0)
                rows = tl.reshape(q_rows, [GROUP_PAD, QUERIES])
                own_rows = tl.sum(tl.where(members[:, None] == 0, rows, 0), 0)
                norm_of = tl.reshape(norm, [GROUP_PAD, QUERIES])
                for m in tl.static_range(GROUP_PAD):
                    if tl.sum(tl.where(members == m, hit.to(tl.int32), 0), 0) > 0:
                        q_m = tl.load(
                            q_ptr + own_rows[:, None] * stride_qt
                            + (kv_head * group + m) * stride_qh + d[None, :],
                            mask=d_ok[None, :], other=0.0,
                        )  # fmt: skip
                        s = query_key_products(q_m, k, DOT_PRECISION) * scale_log2
                        s = tl.where(
                            keys[None, :] <= own_position[:, None], s, float("-inf")
                        )
                        norm_m = tl.sum(
                            tl.where(members[:, None] == m, norm_of, 0.0), 0
                        )
                        mass = (
                            tl.sum(tl.sum(tl.exp2(s - norm_m[:, None]), 1), 0) / QUERIES
                        )
                        slot_m = tl.sum(tl.where(members == m, write_slot, 0), 0)
                        tl.store(
                            masses_ptr + (kv_head * group + m).to(tl.int64) * stride_sh
                            + g.to(tl.int64) * stride_sg + slot_m, mass,
                        )  # fmt: skip
            else:
                s = query_key_products(queries, k, DOT_PRECISION) * scale_log2
                s = tl.where(keys[None, :] <= position[:, None], s, float("-inf"))
                mass = _group_mass(s, norm, GROUP_PAD, QUERIES)
                tl.store(mass_row + write_slot, mass, mask=hit)
            block = next_block
            k = next_k


def _sampled_block_masses(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
    rerank: torch.Tensor,
    scale: float,
    local_blocks: int,
    masses: torch.Tensor,
    q_scale: torch.Tensor | None = None,
    *,
    mode: str,
) -> None:
    Hq, T, W = kv_index.shape
    if T == 0:
        return
    Hkv = kv.num_kv_heads
    group, D = Hq // Hkv, q.shape[2]
    group_pad = triton.next_power_of_2(group)
    rerank8 = rerank.to(torch.int8)
    union_list = (None, None, 0, 0)  # read by the union_list mode only
    if mode == "union_list":
        union = torch.empty((Hkv, T, W), dtype=torch.int32, device=q.device)
        union_count = torch.empty((Hkv, T), dtype=torch.int32, device=q.device)
        union_list = (union, union_count, union.stride(0), union.stride(1))
        _union_kernel[(Hkv, T)](
            kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
            *union_list, rerank8, plan.block_request, group, GROUP_PAD=group_pad,
            num_warps=1,
        )  # fmt: skip
    _grouped_mass_kernel[(Hkv, T)](
        q, q.stride(0), q.stride(1), q_scale, *kv.key_args(),
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        masses, masses.stride(0), masses.stride(1),
        *union_list, rerank8, plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        plan.block_request, plan.block_row,
        scale * 1.4426950408889634, group, local_blocks,
        MODE=MODES[mode], PAGED=kv.paged, PAGE_SIZE=kv.page_size, BLOCK=plan.block_size,
        QUERIES=RERANK_QUERIES, GROUP_PAD=group_pad, HEAD_DIM=D,
        BLOCK_D=triton.next_power_of_2(D), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=4,
    )  # fmt: skip


grouped = partial(_sampled_block_masses, mode="grouped")
prefetch = partial(_sampled_block_masses, mode="prefetch")
head_products = partial(_sampled_block_masses, mode="head_products")
union_list = partial(_sampled_block_masses, mode="union_list")
