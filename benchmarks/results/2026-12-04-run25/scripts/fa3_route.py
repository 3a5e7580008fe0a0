"""Run 25 (lab): block-sparse attention through FA3 in one launch, as the backend would
run it if `fa3_lists_ab.py` shows FA3 faster on our lists than the Gluon kernel.

FA3 (vLLM's `flash_attn_varlen_func`, `fa_version=3`) takes one page table per
request. Here every (query head, global query block) of the plan is one "request" of
one head: its queries gathered head-major, heaviest lists first (the longest
requests start first, so the launch ends evenly), its pages the listed key blocks'
pages of the request's block table, read from a strided view of vLLM's cache whose
"page" ``p x (page stride / D) + g`` is page p's KV head g (no K/V copy), and its key
length ``(count - 1) x B`` plus the diagonal block's keys up to the block's last
query. FA3's causal mask is aligned bottom-right, so only the diagonal (the last
pages) is masked, as our kernels do. The outputs are scattered back into ``out``.

Paged K/V only (the backend's case; vLLM's cache is whole pages, so every page read
is in bounds): ``q, out [total_q, Hq, D]`` 16-bit, ``kv`` a paged ``KVSource``
``[pages, P, Hkv, D]`` with ``B % P == 0``, ``kv_index [Hq, T, W]`` / ``kv_count
[Hq, T]`` int32 as ``find_blocks`` returns them. No host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from vllm_flexprefill.kernels import KVSource, SparsePlan


def heads_as_pages(cache: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``cache [pages, page, Hkv, D]`` (any page stride, slots ``Hkv * D`` apart) seen
    as ``[N, page, 1, D]`` whose "page" ``p * per_page + g`` is page p's KV head g
    (``per_page`` = the page stride over D). Returns the view and ``per_page``."""
    pages, page, hkv, d = cache.shape
    assert cache.stride()[1:] == (hkv * d, d, 1) and cache.stride(0) % d == 0
    per_page = cache.stride(0) // d
    count = (pages - 1) * per_page + hkv  # the last one ends at the cache's last element
    assert count < 2**31, "page numbers must fit FA3's int32 page table"
    view = cache.as_strided(
        (count, page, 1, d), (d, hkv * d, d, 1), cache.storage_offset()
    )
    return view, per_page


@triton.jit(do_not_specialize=["num_q_blocks", "stride_tr", "stride_or"])
def _entry_tables_kernel(
    order_ptr,  # [E] int64: entry -> h * T + t
    index_ptr, stride_ih, stride_it,  # kv_index [Hq, T, W] int32
    count_ptr, stride_ch,  # kv_count [Hq, T] int32
    block_request, block_row, req_kv_len, req_table_row,
    table_ptr, stride_tr,  # the cache's block table [rows, max_pages] int32
    out_ptr, stride_or,  # [E, W * B / P] int32: the entries' pages
    used_ptr,  # [E] int32: the entries' key lengths
    num_q_blocks, group, per_page,
    BLOCK: tl.constexpr, PAGE_SIZE: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    e = tl.program_id(0)
    entry = tl.load(order_ptr + e)
    h = entry // num_q_blocks
    t = entry % num_q_blocks
    count = tl.load(count_ptr + h * stride_ch + t)
    req = tl.load(block_request + t)
    kv_len = tl.load(req_kv_len + req)
    diagonal = tl.load(block_row + t)
    end = tl.minimum((diagonal + 1) * BLOCK, kv_len)
    tl.store(used_ptr + e, (count - 1) * BLOCK + end - diagonal * BLOCK)
    PER_BLOCK: tl.constexpr = BLOCK // PAGE_SIZE
    last_page = (kv_len - 1) // PAGE_SIZE
    table_row = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_tr
    index_row = index_ptr + h.to(tl.int64) * stride_ih + t.to(tl.int64) * stride_it
    out_row = out_ptr + e.to(tl.int64) * stride_or
    slots = count * PER_BLOCK
    for start in range(0, slots, CHUNK):
        s = start + tl.arange(0, CHUNK)
        ok = s < slots
        block = tl.load(index_row + s // PER_BLOCK, mask=ok, other=0)
        # pages past the sequence (a diagonal block's tail) read its last page
        page_index = tl.minimum(block * PER_BLOCK + s % PER_BLOCK, last_page)
        page = tl.load(table_row + page_index, mask=ok, other=0)
        tl.store(out_row + s, page * per_page + h // group, mask=ok)


@dataclass
class Fa3Requests:
    """One FA3 launch over every (query head, global query block) of a plan, heaviest
    lists first: FA3's row ``r`` is query ``rows[r]`` of head ``heads[r]`` (``[Hq *
    total_q]`` int64 each); request ``e`` holds rows ``cu_q[e] .. cu_q[e+1]`` ([E + 1]
    int32), its pages ``tables[e]`` ([E, W * B / P] int32) of ``key, value`` (the
    cache through :func:`heads_as_pages`) and its key length ``used[e]`` ([E] int32)."""

    rows: torch.Tensor
    heads: torch.Tensor
    cu_q: torch.Tensor
    tables: torch.Tensor
    used: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    block_size: int
    max_k: int

    def launch(self, q_rows, out_rows, scale, attend, bulk_pages=True) -> None:
        """``attend`` over the gathered ``q_rows [Hq * total_q, 1, D]`` into
        ``out_rows``. ``bulk_pages``: declare ``max_seqlen_q`` one row above the block.
        FA3 reads pages with TMA only when ``max_seqlen_q x (heads per KV head)``
        exceeds its 128-row tile (``get_pagedkv_tma`` in its ``flash_api.cpp``), else
        with per-row copies; its varlen scheduler counts each request's own rows, so
        the extra row costs nothing. 16-token pages take the per-row copies either
        way."""
        attend(
            q_rows, self.key, self.value, self.block_size + bulk_pages, self.cu_q,
            self.max_k, seqused_k=self.used, block_table=self.tables,
            softmax_scale=scale, causal=True, out=out_rows,
        )  # fmt: skip


def fa3_requests(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
) -> Fa3Requests:
    """The requests of :func:`fa3_block_sparse`'s launch (``plan.num_q_blocks`` > 0)."""
    Hq = q.shape[1]
    B, P, T = plan.block_size, kv.page_size, plan.num_q_blocks
    assert kv.paged and B % P == 0
    E = Hq * T
    dev = q.device
    order = torch.argsort(kv_count.reshape(E), descending=True, stable=True)
    # each global query block's first query row and its number of queries
    req = plan.block_request.long()
    context = (plan.kv_len - plan.q_len)[req]
    first = torch.maximum(plan.block_row * B, context)
    q_len = torch.minimum((plan.block_row + 1) * B, plan.kv_len[req]) - first
    q_first = plan.q_start[req] + first - context
    head, block = order // T, order % T
    lengths = q_len[block]
    cu_q = torch.zeros(E + 1, dtype=torch.int32, device=dev)
    cu_q[1:] = lengths.cumsum(0)
    total = Hq * sum(plan.q_lens)
    entry_of_row = torch.repeat_interleave(
        torch.arange(E, device=dev), lengths, output_size=total
    )
    rows = (
        torch.arange(total, device=dev)
        - cu_q[entry_of_row]
        + q_first[block][entry_of_row]
    )
    key, per_page = heads_as_pages(kv.key)
    value, _ = heads_as_pages(kv.value)
    W = kv_index.shape[2]
    tables = torch.empty(E, W * (B // P), dtype=torch.int32, device=dev)
    used = torch.empty(E, dtype=torch.int32, device=dev)
    _entry_tables_kernel[(E,)](
        order,
        kv_index, kv_index.stride(0), kv_index.stride(1),
        kv_count, kv_count.stride(0),
        plan.block_request, plan.block_row, plan.kv_len, plan.table_row,
        kv.block_table, kv.block_table.stride(0),
        tables, tables.stride(0), used,
        T, Hq // kv.num_kv_heads, per_page,
        BLOCK=B, PAGE_SIZE=P, CHUNK=128,
    )  # fmt: skip
    heads = head[entry_of_row]
    return Fa3Requests(rows, heads, cu_q, tables, used, key, value, B, W * B)


def fa3_block_sparse(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    attend,
    bulk_pages: bool = True,
) -> None:
    """Write the attention of the plan's query rows into ``out`` through ``attend``
    (``flash_attn_varlen_func`` with ``fa_version=3``, or a stand-in with its
    semantics): one call over every (head, query block); ``bulk_pages`` as
    :meth:`Fa3Requests.launch` takes it."""
    if plan.num_q_blocks == 0:
        return
    requests = fa3_requests(q, kv, plan, kv_index, kv_count)
    q_rows = q[requests.rows, requests.heads].unsqueeze(1)
    out_rows = torch.empty_like(q_rows)
    requests.launch(q_rows, out_rows, scale, attend, bulk_pages)
    out[requests.rows, requests.heads] = out_rows[:, 0].to(out.dtype)
