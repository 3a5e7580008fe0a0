"""The rerank selection's last step (``selection: rerank``, ``reference.reranked``):
each row's candidates, the block list ``build_block_index`` makes from the candidate
thresholds (``vsgrid.candidate_thresholds``: the estimate's top ``RERANK_WIDTH`` x
count, plus the sink and the local window), are scored by the row's sampled queries
and cut to the row's count (or, ``rerank_budget: head``, the head's), in place.

* :func:`sampled_block_masses`: one program per (head, query block, key chunk) of a
  rerank request: the launch walks the keys one chunk (``chunk_blocks`` key blocks,
  about a third of the L2 cache for all KV heads' keys) after another, every row's
  listed blocks in that chunk, a query block's heads side by side, so that the key
  tiles its programs read at once stay in the L2 cache (one program a row walking its
  whole list read most tiles from memory: run 39's counters, 30% L2 hits). Its
  ``RERANK_QUERIES`` sampled queries (every ``B / RERANK_QUERIES``-th query of the
  absolute block, ending at its last, clamped into the chunk) take their log-sum-exp
  over the keys of the row's forced blocks (the sink and the ``local_blocks``
  nearest, at or before each query: three key tiles), then, over the list's slots
  whose blocks lie in the chunk (the lists are ascending), each listed block's mass
  relative to it (``reference.sampled_block_masses``), averaged over the queries, into
  the block's slot of ``masses``. One ``[queries, B]`` product a block.
* :func:`keep_reranked`: the least mass each row keeps, then the lists cut to it. A
  row of a request of ``rerank_budget: row`` (one program a row) keeps its count: the
  value its count-th largest mass reaches, found by a radix select over the masses'
  bit patterns (``radix_select.py``; every block tied with it stays, as in the
  reference; a block of no mass never).
  The rows of a request of ``rerank_budget: head`` turn their masses into shares of
  their sum, in place (one program a row), then each (request, head) keeps the sum of
  its rows' counts: one bound for all its rows, by the same search over all their
  shares, one launch a pass: each program histograms ``HEAD_PROGRAM_ROWS`` of a
  head's rows (``[HEAD_ROWS, HEAD_TILE]`` shares a step) into the head's record
  (``HEAD_RECORD``, by atomic adds), from which the next pass's programs, and then
  one program a (request, head), read the digits chosen so far.
  Then one program a row compacts its list in place to the blocks at or above its
  bound and the forced ones (the sink and the ``local_blocks`` nearest), still sorted
  with the diagonal last.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from vllm_flexprefill.blocks import cdiv
from vllm_flexprefill.selection import RERANK_QUERIES

from .kv_access import load_key_tile
from .plan import KVSource, SparsePlan
from .probe import running_max_and_sum
from .quant import query_key_products, scale_of
from .radix_select import DIGIT_BITS, choose_digit, digit_counts, select_bits
from .utils import dot_precision

ROW_TILE = 1024  # list slots a step of the keep, share and slot-range loops
# a key chunk of the sampled-mass walk fills 1 / CHUNK_L2_SHARE of the L2 cache
CHUNK_L2_SHARE = 3
# the bound search's step: list slots of one row (a row's own count), or of HEAD_ROWS
# rows (a head-wide budget)
BOUND_TILE = 1024
HEAD_ROWS, HEAD_TILE = 16, 128
# a head-wide bound's programs: rows of the head each (a pass reads every row once)
HEAD_PROGRAM_ROWS = 64
# a head-wide bound's int32 record a (request, head): each pass's digit counts, then
# the head's budget
HEAD_RECORD = (32 // DIGIT_BITS << DIGIT_BITS) + 1


@triton.jit
def _block_logits(
    queries, position, block, k_ptr, kv_h, k_start, table_row_ptr, stride_kp,
    stride_ks, scale_log2, d, d_ok,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """``[QUERIES, BLOCK]`` base-2 logits of the sampled ``queries`` against key
    block ``block`` (-inf after each query)."""
    keys = block * BLOCK + tl.arange(0, BLOCK)
    visible = keys[None, :] <= position[:, None]
    k = load_key_tile(
        k_ptr, kv_h, keys, keys <= tl.max(position, 0), k_start, table_row_ptr,
        stride_kp, stride_ks, d, d_ok, PAGED, PAGE_SIZE,
    )  # fmt: skip
    s = query_key_products(queries, k, DOT_PRECISION) * scale_log2
    return tl.where(visible, s, float("-inf"))


@triton.jit
def _forced_log_sum_exp(
    queries, position, r, k_ptr, kv_h, k_start, table_row_ptr, stride_kp, stride_ks,
    scale_log2, d, d_ok, local_blocks,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Each sampled query's normaliser, ``[QUERIES]`` in base 2: its log-sum-exp over
    the keys at or before it of query block ``r``'s forced blocks (the sink and the
    ``local_blocks`` nearest; a block nearer than the sink's next counted once). Finite:
    each query sees its diagonal block."""
    running_max = tl.full([queries.shape[0]], float("-inf"), tl.float32)
    running_sum = tl.zeros([queries.shape[0]], tl.float32)
    for j in range(-1, local_blocks):
        counted = (j < 0) | (r - j > 0)
        block = tl.where(j < 0, 0, tl.maximum(r - j, 0))
        s = _block_logits(
            queries, position, block, k_ptr, kv_h, k_start, table_row_ptr,
            stride_kp, stride_ks, scale_log2, d, d_ok,
            PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
        )  # fmt: skip
        s = tl.where(counted, s, float("-inf"))
        running_max, running_sum = running_max_and_sum(running_max, running_sum, s)
    return running_max + tl.log2(running_sum)


@triton.jit
def _chunk_slots(index_row, n, first_block, end_block, SLOT_TILE: tl.constexpr):
    """The slots ``[first, end)`` of an ascending list (``n`` blocks from
    ``index_row``) whose blocks lie in ``[first_block, end_block)``: the numbers of
    listed blocks below each bound."""
    first = tl.zeros([], tl.int32)
    end = tl.zeros([], tl.int32)
    for start in range(0, n, SLOT_TILE):
        slots = start + tl.arange(0, SLOT_TILE)
        block = tl.load(index_row + slots, mask=slots < n, other=end_block)
        first += tl.sum((block < first_block).to(tl.int32), 0)
        end += tl.sum((block < end_block).to(tl.int32), 0)
    return first, end


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["stride_table", "stride_ih", "stride_ib", "stride_ch",
                       "stride_sh", "stride_sg", "chunk_blocks"]
)  # fmt: skip
def _sampled_mass_kernel(
    q_ptr, stride_qt, stride_qh, q_scale_ptr,  # [total_q, Hq, D]
    k_ptr, stride_kp, stride_ks, stride_kh, table_ptr, stride_table, k_scale_ptr,
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,  # [Hq, T, W], [Hq, T]
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32 out
    rerank_ptr,  # [R] int8: requests of rerank selection (the others are skipped)
    req_q_start, req_q_len, req_kv_len, req_k_start, req_table_row,
    block_request, block_row, scale_log2, group, local_blocks, chunk_blocks,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK: tl.constexpr,
    QUERIES: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    SLOT_TILE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)  # a row's heads launch side by side: a KV head's share tiles
    g = tl.program_id(1)
    chunk = tl.program_id(2)  # slowest: every row's blocks of one chunk, then the next
    req = tl.load(block_request + g)
    if tl.load(rerank_ptr + req) == 0:
        return
    n = tl.load(count_ptr + h.to(tl.int64) * stride_ch + g)
    index_row = index_ptr + h.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
    first_slot, end_slot = _chunk_slots(
        index_row, n, chunk * chunk_blocks, (chunk + 1) * chunk_blocks, SLOT_TILE
    )
    if first_slot == end_slot:
        return
    STEP: tl.constexpr = BLOCK // QUERIES
    kv_len = tl.load(req_kv_len + req)
    context = kv_len - tl.load(req_q_len + req)
    position = tl.load(block_row + g) * BLOCK + tl.arange(0, QUERIES) * STEP + STEP - 1
    position = tl.minimum(tl.maximum(position, context), kv_len - 1)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    rows = (tl.load(req_q_start + req) + position - context).to(tl.int64)
    queries = tl.load(
        q_ptr + rows[:, None] * stride_qt + h * stride_qh + d[None, :],
        mask=d_ok[None, :],
        other=0.0,
    )
    scale_log2 = scale_log2 * scale_of(q_scale_ptr) * scale_of(k_scale_ptr)
    k_start = tl.load(req_k_start + req)
    table_row_ptr = table_ptr + tl.load(req_table_row + req).to(tl.int64) * stride_table
    kv_h = (h // group) * stride_kh

    r = tl.load(block_row + g)
    norm = _forced_log_sum_exp(
        queries, position, r, k_ptr, kv_h, k_start, table_row_ptr, stride_kp,
        stride_ks, scale_log2, d, d_ok, local_blocks,
        PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
    )  # fmt: skip

    mass_row = masses_ptr + h.to(tl.int64) * stride_sh + g.to(tl.int64) * stride_sg
    for slot in range(first_slot, end_slot):
        s = _block_logits(
            queries, position, tl.load(index_row + slot), k_ptr, kv_h, k_start,
            table_row_ptr, stride_kp, stride_ks, scale_log2, d, d_ok,
            PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
        )  # fmt: skip
        mass = tl.sum(tl.sum(tl.exp2(s - norm[:, None]), 1), 0) / QUERIES
        tl.store(mass_row + slot, mass)


@triton.jit
def _kept_value(bits, enough, budget):
    """The least mass a bound keeps, from :func:`radix_select.select_bits`'s ``(bits,
    enough)`` for ``budget``: at least the least positive float32 (a block of no mass
    is never kept), the largest finite one if ``budget`` is 0 or less."""
    kept = tl.where(enough, tl.maximum(bits, 1), 1)
    kept = tl.where(budget > 0, kept, 0x7F7FFFFF)
    return kept.to(tl.float32, bitcast=True)


@triton.jit
def _least_kept(
    masses, stride_sg, count_row, first_row, rows, budget,
    ROWS: tl.constexpr, TILE: tl.constexpr, DIGIT_BITS: tl.constexpr,
):  # fmt: skip
    """The largest value that ``budget`` of the non-negative float32 values in rows
    ``first_row .. first_row + rows - 1`` reach (row ``g``: its ``count_row[g]``
    first entries from ``masses + g * stride_sg``), and at least the least positive
    one; the largest finite float if ``budget`` is 0 or less."""
    bits, enough = select_bits(
        masses, stride_sg, count_row, first_row, rows, budget, ROWS, TILE, DIGIT_BITS
    )
    return _kept_value(bits, enough, budget)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_ch", "stride_sh", "stride_sg", "stride_kh"])
def _row_bound_kernel(
    count_ptr, stride_ch,  # [Hq, T] int32
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32, non-negative
    keep_ptr, stride_kh,  # [Hq, T] int32: how many of the row's candidates to keep
    bound_ptr,  # [Hq, T] float32 out (strided as keep)
    rows_ptr, block_request,  # [R] int8: requests whose rows keep their own count
    TILE: tl.constexpr, DIGIT_BITS: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    h = tl.program_id(1)
    if tl.load(rows_ptr + tl.load(block_request + g)) == 0:
        return
    count_row = count_ptr + h.to(tl.int64) * stride_ch
    keep = tl.load(keep_ptr + h.to(tl.int64) * stride_kh + g)
    keep = tl.minimum(keep, tl.load(count_row + g))
    bound = _least_kept(
        masses_ptr + h.to(tl.int64) * stride_sh, stride_sg, count_row, g, 1, keep,
        1, TILE, DIGIT_BITS,
    )  # fmt: skip
    tl.store(bound_ptr + h.to(tl.int64) * stride_kh + g, bound)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_ch", "stride_sh", "stride_sg"])
def _row_share_kernel(
    count_ptr, stride_ch,  # [Hq, T] int32
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32: masses in, shares out
    head_ptr, block_request,  # [R] int8: requests whose heads share a budget
    TILE: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    h = tl.program_id(1)
    if tl.load(head_ptr + tl.load(block_request + g)) == 0:
        return
    n = tl.load(count_ptr + h.to(tl.int64) * stride_ch + g)
    mass_row = masses_ptr + h.to(tl.int64) * stride_sh + g.to(tl.int64) * stride_sg
    total = tl.zeros([], tl.float32)
    for first in range(0, n, TILE):
        c = first + tl.arange(0, TILE)
        total += tl.sum(tl.load(mass_row + c, mask=c < n, other=0.0), 0)
    total = tl.maximum(total, 1e-30)
    for first in range(0, n, TILE):
        c = first + tl.arange(0, TILE)
        mass = tl.load(mass_row + c, mask=c < n)
        tl.store(mass_row + c, mass / total, mask=c < n)


@triton.jit
def _head_record(record_ptr, RECORD: tl.constexpr):
    """``(record, budget_at)``: the record (``RECORD = HEAD_RECORD`` int32 in
    ``record_ptr [R, Hq, RECORD]``: each pass's ``2 ** DIGIT_BITS`` counts, then the
    budget) of this program's (request, head), its first two program ids, and its
    budget's place."""
    head = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    record = record_ptr + head.to(tl.int64) * RECORD
    return record, record + RECORD - 1


@triton.jit
def _head_choice(record, passes, budget, DIGIT_BITS: tl.constexpr):
    """A head's bound search after its first ``passes`` passes: ``(chosen, enough)``
    of :func:`radix_select.choose_digit` from the passes' counts in the head's
    ``record`` (:func:`_head_record`)."""
    BINS: tl.constexpr = 1 << DIGIT_BITS
    chosen = tl.zeros([], tl.int32)
    above = tl.zeros([], tl.int32)
    enough = tl.full([], 1, tl.int1)
    for p in range(0, passes):
        counts = tl.load(record + p * BINS + tl.arange(0, BINS))
        chosen, above, enough = choose_digit(
            counts, chosen, above, enough, budget, DIGIT_BITS
        )
    return chosen, enough


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["stride_ch", "stride_sh", "stride_sg", "stride_kh",
                       "pass_index", "program_rows"]
)  # fmt: skip
def _head_digits_kernel(
    count_ptr, stride_ch,  # [Hq, T] int32
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32: the rows' shares
    keep_ptr, stride_kh,  # [Hq, T] int32: how many of the row's candidates to keep
    head_ptr, q_block_offset,  # [R] int8: requests whose heads share a budget
    record_ptr,  # [R, Hq, RECORD] int32, zeroed: the passes' counts, the budget
    pass_index, program_rows,
    ROWS: tl.constexpr, TILE: tl.constexpr, DIGIT_BITS: tl.constexpr,
    RECORD: tl.constexpr,
):  # fmt: skip
    req = tl.program_id(0)
    h = tl.program_id(1)
    part = tl.program_id(2)  # this program's rows of the request: program_rows
    if tl.load(head_ptr + req) == 0:
        return
    first_row = tl.load(q_block_offset + req)
    rows = tl.load(q_block_offset + req + 1) - first_row
    if part * program_rows >= rows:
        return
    first_row += part * program_rows
    rows = tl.minimum(rows - part * program_rows, program_rows)
    count_row = count_ptr + h.to(tl.int64) * stride_ch
    record, budget_at = _head_record(record_ptr, RECORD)
    if pass_index == 0:  # the head keeps its rows' counts
        keep_row = keep_ptr + h.to(tl.int64) * stride_kh
        kept = tl.zeros([], tl.int32)  # by this program's rows
        for first_g in range(0, rows, ROWS):
            g = first_row + first_g + tl.arange(0, ROWS)
            ok = first_g + tl.arange(0, ROWS) < rows
            n = tl.load(count_row + g, mask=ok, other=0)
            kept += tl.sum(tl.minimum(tl.load(keep_row + g, mask=ok, other=0), n), 0)
        tl.atomic_add(budget_at, kept, sem="relaxed")
    # the digits the earlier passes chose (their counts and the budget are whole:
    # each pass is a launch of its own)
    chosen, _ = _head_choice(record, pass_index, tl.load(budget_at), DIGIT_BITS)
    counts = digit_counts(
        masses_ptr + h.to(tl.int64) * stride_sh, stride_sg, count_row, first_row, rows,
        chosen, 32 - DIGIT_BITS * (pass_index + 1), ROWS, TILE, DIGIT_BITS,
    )  # fmt: skip
    BINS: tl.constexpr = 1 << DIGIT_BITS
    counts_at = record + pass_index * BINS + tl.arange(0, BINS)
    tl.atomic_add(counts_at, counts, sem="relaxed")  # ordered by the launches


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(do_not_specialize=["stride_kh"])
def _head_bound_kernel(
    bound_ptr, stride_kh,  # [Hq, T] float32 out
    head_ptr, q_block_offset,  # [R] int8: requests whose heads share a budget
    record_ptr,  # [R, Hq, RECORD] int32, as _head_digits_kernel left it
    ROWS: tl.constexpr, DIGIT_BITS: tl.constexpr, RECORD: tl.constexpr,
):  # fmt: skip
    req = tl.program_id(0)
    h = tl.program_id(1)
    if tl.load(head_ptr + req) == 0:
        return
    record, budget_at = _head_record(record_ptr, RECORD)
    budget = tl.load(budget_at)
    chosen, enough = _head_choice(record, 32 // DIGIT_BITS, budget, DIGIT_BITS)
    bound = _kept_value(chosen, enough, budget)
    first_row = tl.load(q_block_offset + req)
    rows = tl.load(q_block_offset + req + 1) - first_row
    for first_g in range(0, rows, ROWS):
        g = first_g + tl.arange(0, ROWS)
        bound_at = bound_ptr + h.to(tl.int64) * stride_kh + first_row + g
        tl.store(bound_at, tl.full([ROWS], 0.0, tl.float32) + bound, mask=g < rows)


# Arguments that follow the batch's sizes stay unspecialised (see kernels/forward.py).
@triton.jit(
    do_not_specialize=["stride_ih", "stride_ib", "stride_ch", "stride_sh", "stride_sg",
                       "stride_kh"]
)  # fmt: skip
def _keep_kernel(
    index_ptr, count_ptr, stride_ih, stride_ib, stride_ch,  # [Hq, T, W], [Hq, T]
    masses_ptr, stride_sh, stride_sg,  # [Hq, T, W] float32, non-negative
    bound_ptr, stride_kh,  # [Hq, T] float32: the least mass a kept candidate has
    rerank_ptr, block_request, block_row, local_blocks,
    TILE: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    h = tl.program_id(1)
    if tl.load(rerank_ptr + tl.load(block_request + g)) == 0:
        return
    r = tl.load(block_row + g)
    count_at = count_ptr + h.to(tl.int64) * stride_ch + g
    n = tl.load(count_at)
    mass_row = masses_ptr + h.to(tl.int64) * stride_sh + g.to(tl.int64) * stride_sg
    index_row = index_ptr + h.to(tl.int64) * stride_ih + g.to(tl.int64) * stride_ib
    bound = tl.load(bound_ptr + h.to(tl.int64) * stride_kh + g)
    # compact in place: a slot is written only at or before where it was read
    found = tl.zeros([], tl.int32)
    for first in range(0, n, TILE):
        c = first + tl.arange(0, TILE)
        listed = c < n
        block = tl.load(index_row + c, mask=listed, other=0)
        mass = tl.load(mass_row + c, mask=listed, other=0.0)
        forced = (block == 0) | (r - block < local_blocks)
        chosen = listed & (forced | (mass >= bound))
        tl.debug_barrier()  # every read of this tile before any write into it
        slot = found + tl.cumsum(chosen.to(tl.int32), 0) - 1
        tl.store(index_row + slot, block, mask=chosen)
        found += tl.sum(chosen.to(tl.int32), 0)
    tl.store(count_at, found)


def sampled_block_masses(
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
    chunk_blocks: int | None = None,
) -> None:
    """Write into ``masses [Hq, T, W]`` float32, for every row of the requests of
    ``rerank [R]`` (bool), the sampled queries' mass on each listed block (slot ``j``
    of the row's list in ``kv_index [Hq, T, W]`` int32, ``kv_count [Hq, T]`` of
    them) relative to their mass on the row's forced blocks (key block 0 and the
    ``local_blocks`` nearest the diagonal) as the module's docstring states. ``q
    [total_q, Hq, D]`` (``q_scale``: fp8 queries' scale); keys from ``kv``. The other
    rows and slots are left as they are. The lists must be ascending (as
    ``build_block_index`` writes them). ``chunk_blocks``: key blocks a chunk of the
    walk (default: :func:`chunk_blocks_for`)."""
    Hq, T, _ = kv_index.shape
    if T == 0:
        return
    D = q.shape[2]
    chunk_blocks = chunk_blocks or chunk_blocks_for(kv, plan.block_size)
    chunks = cdiv(plan.max_k_blocks, chunk_blocks)
    _sampled_mass_kernel[(Hq, T, chunks)](
        q, q.stride(0), q.stride(1), q_scale, *kv.key_args(),
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        masses, masses.stride(0), masses.stride(1),
        rerank.to(torch.int8),
        plan.q_start, plan.q_len, plan.kv_len, plan.k_start, plan.table_row,
        plan.block_request, plan.block_row,
        scale * 1.4426950408889634, Hq // kv.num_kv_heads, local_blocks, chunk_blocks,
        PAGED=kv.paged, PAGE_SIZE=kv.page_size, BLOCK=plan.block_size,
        QUERIES=RERANK_QUERIES, HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D),
        SLOT_TILE=ROW_TILE, DOT_PRECISION=dot_precision(q.dtype), num_warps=4,
    )  # fmt: skip


def chunk_blocks_for(kv: KVSource, block_size: int) -> int:
    """Key blocks a chunk of :func:`sampled_block_masses`'s walk: as many as the keys
    of every KV head fill ``1 / CHUNK_L2_SHARE`` of the GPU's L2 cache in (at least
    one)."""
    key = kv.key
    block_bytes = block_size * kv.num_kv_heads * key.shape[-1] * key.element_size()
    return max(1, _l2_cache_bytes(key.device) // CHUNK_L2_SHARE // block_bytes)


@functools.cache
def _l2_cache_bytes(device: torch.device) -> int:
    """The L2 cache of ``device`` in bytes (asked once a device: the search runs every
    layer); 50 MB where there is no GPU, as on an H100 or H200."""
    if device.type != "cuda":
        return 50 * 2**20
    return torch.cuda.get_device_properties(device).L2_cache_size


def keep_reranked(
    plan: SparsePlan,
    kv_index: torch.Tensor,
    kv_count: torch.Tensor,
    masses: torch.Tensor,
    keep: torch.Tensor,
    rerank: torch.Tensor,
    head_budget: torch.Tensor,
    local_blocks: int,
    head_program_rows: int | None = None,
) -> None:
    """Cut, in place, each list of a request of ``rerank [R]`` (bool) in ``kv_index
    [Hq, T, W]`` / ``kv_count [Hq, T]`` (int32) to its forced blocks (key block 0 and
    the ``local_blocks`` nearest the diagonal) and the positive ones of largest
    ``masses [Hq, T, W]`` (per slot, float32 >= 0), every one tied with the last
    too; the lists stay sorted. A row keeps its ``keep [Hq, T]`` (int32) largest;
    the heads of a request of ``head_budget [R]`` (bool) keep the sum of their rows'
    ``keep``, the largest shares of their row's sum over all their rows (``masses``
    then holds the shares). ``head_program_rows``: a head's rows a program of the
    head-wide search (default: ``HEAD_PROGRAM_ROWS``)."""
    Hq, T, _ = kv_index.shape
    if T == 0:
        return
    keep = keep.contiguous()  # the bounds take its strides
    bound = torch.empty_like(keep, dtype=torch.float32)
    row_budget = (rerank & ~head_budget).to(torch.int8)
    head_budget = (rerank & head_budget).to(torch.int8)
    rerank = rerank.to(torch.int8)
    counts = (kv_count, kv_count.stride(0))
    scores = (masses, masses.stride(0), masses.stride(1))
    search = dict(DIGIT_BITS=DIGIT_BITS, num_warps=4)
    _row_bound_kernel[(T, Hq)](
        *counts, *scores, keep, keep.stride(0), bound, row_budget, plan.block_request,
        TILE=BOUND_TILE, **search,
    )  # fmt: skip
    _row_share_kernel[(T, Hq)](
        *counts, *scores, head_budget, plan.block_request, TILE=ROW_TILE, num_warps=4
    )
    # the head-wide bounds: one launch a pass, each head's rows over several programs
    R = plan.num_requests
    records = torch.zeros(R, Hq, HEAD_RECORD, dtype=torch.int32, device=keep.device)
    program_rows = head_program_rows or HEAD_PROGRAM_ROWS
    for pass_index in range(32 // DIGIT_BITS):
        _head_digits_kernel[(R, Hq, cdiv(T, program_rows))](
            *counts, *scores, keep, keep.stride(0), head_budget, plan.q_block_offset,
            records, pass_index, program_rows,
            ROWS=HEAD_ROWS, TILE=HEAD_TILE, RECORD=HEAD_RECORD, **search,
        )  # fmt: skip
    _head_bound_kernel[(R, Hq)](
        bound, bound.stride(0), head_budget, plan.q_block_offset, records,
        ROWS=HEAD_ROWS, RECORD=HEAD_RECORD, **search,
    )  # fmt: skip
    _keep_kernel[(T, Hq)](
        kv_index, kv_count, kv_index.stride(0), kv_index.stride(1), kv_count.stride(0),
        *scores, bound, bound.stride(0), rerank, plan.block_request,
        plan.block_row, local_blocks, TILE=ROW_TILE, num_warps=4,
    )  # fmt: skip
