"""Prototype (issue 14, not in the package): the re-rank of ``refine.py`` as a Triton
kernel, to time it on the H200 beside the sparse attention (``bench_rerank.py``).

One program per (list, query block) row, where a list is a query head's candidates
(:func:`sampled_block_mass`) or the union of a KV head's query heads' candidates, which
then share each key tile (:func:`grouped_block_mass`, with :func:`union_lists`). Each of
the program's heads brings its ``QUERIES`` sampled queries (every ``B / QUERIES``-th
query of the block, ending at its last; ``refine.sampled_positions``); per candidate key
block one ``[heads x QUERIES, B]`` product; the program writes each block's log2-sum-exp
per query row to ``lse`` while it keeps every row's running total, then, from ``lse``,
each block's mass averaged over each head's queries (each query's softmax over its head's
candidates' tokens).

Layouts (one request; contiguous keys): ``q [q_len, Hq, D]``, ``k [kv_len, Hk, D]``;
``index [lists, nq, C]`` int32 candidate key blocks, ``count [lists, nq]`` int32 how
many; ``lse [lists, nq, C, heads x QUERIES]`` float32 scratch; ``mass [Hq, nq, C]``
float32 out. Query blocks are aligned to absolute positions (block ``i`` of the chunk
holds tokens ``(first + i) * B ...``)."""
import torch
import triton
import triton.language as tl

EMPTY = tl.constexpr(-1.0e30)  # a finite floor for running maxima (no inf - inf)


@triton.jit
def _candidate_lse(
    queries, key_head, block, position, rows_see, kv_len, stride_kt, scale_log2,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Per query row, the log2-sum-exp of its scaled logits against key block ``block``
    (the keys up to its ``position``; -inf for rows where ``rows_see`` is off)."""
    keys = block * BLOCK + tl.arange(0, BLOCK)
    tile = tl.load(
        key_head + keys[None, :] * stride_kt + tl.arange(0, HEAD_DIM)[:, None],
        mask=keys[None, :] < kv_len,
        other=0.0,
    )  # [HEAD_DIM, BLOCK]
    s = tl.dot(queries, tile, input_precision=PRECISION) * scale_log2
    s = tl.where((keys[None, :] <= position[:, None]) & rows_see[:, None], s, float("-inf"))
    block_max = tl.maximum(tl.max(s, 1), EMPTY)
    return block_max + tl.log2(tl.sum(tl.exp2(s - block_max[:, None]), 1))


@triton.jit
def _add_lse(running_max, running_sum, block_lse):
    """The running (max, sum) of a log2-sum-exp with one more term per row."""
    new_max = tl.maximum(running_max, block_lse)
    running_sum = running_sum * tl.exp2(running_max - new_max) + tl.exp2(block_lse - new_max)
    return new_max, running_sum


@triton.jit
def _block_mass_kernel(
    q, k, index, member, count, lse, mass,
    q_len, kv_len, first_q_block, scale_log2,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_ih, stride_ir, stride_ch, stride_lh, stride_lr, stride_lc,
    stride_mh, stride_mr,
    HEADS: tl.constexpr, LISTS_PER_KV_HEAD: tl.constexpr, MEMBERS: tl.constexpr,
    BLOCK: tl.constexpr, QUERIES: tl.constexpr, HEAD_DIM: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """``HEADS`` query heads a program (list ``l`` holds heads ``l * HEADS + g``, its keys
    KV head ``l // LISTS_PER_KV_HEAD``); with ``MEMBERS``, bit ``g`` of ``member`` marks
    the list's slots head ``g`` lists (its rows see no other slot's keys)."""
    row = tl.program_id(0)
    list_id = tl.program_id(1)
    context_len = kv_len - q_len
    step: tl.constexpr = BLOCK // QUERIES
    lane = tl.arange(0, HEADS * QUERIES)
    head_in_list = lane // QUERIES
    position = (first_q_block + row) * BLOCK + (lane % QUERIES) * step + step - 1
    position = tl.minimum(tl.maximum(position, context_len), kv_len - 1)
    queries = tl.load(
        q
        + (position - context_len)[:, None] * stride_qt
        + (list_id * HEADS + head_in_list)[:, None] * stride_qh
        + tl.arange(0, HEAD_DIM)[None, :]
    )
    index_row = index + list_id * stride_ih + row * stride_ir
    member_row = member + list_id * stride_ih + row * stride_ir
    lse_row = lse + list_id * stride_lh + row * stride_lr
    n = tl.load(count + list_id * stride_ch + row)
    key_head = k + (list_id // LISTS_PER_KV_HEAD) * stride_kh
    running_max = tl.full([HEADS * QUERIES], EMPTY, tl.float32)
    running_sum = tl.zeros([HEADS * QUERIES], tl.float32)
    for c in range(n):
        if MEMBERS:
            listed = ((tl.load(member_row + c) >> head_in_list) & 1) == 1
        else:
            listed = lane >= 0
        block_lse = _candidate_lse(
            queries, key_head, tl.load(index_row + c), position, listed, kv_len,
            stride_kt, scale_log2, BLOCK, HEAD_DIM, PRECISION,
        )  # fmt: skip
        tl.store(lse_row + c * stride_lc + lane, block_lse)
        running_max, running_sum = _add_lse(running_max, running_sum, block_lse)
    total = running_max + tl.log2(running_sum)
    tl.debug_barrier()  # the stores above, read back by other threads below
    heads = list_id * HEADS + tl.arange(0, HEADS)
    mass_row = mass + heads * stride_mh + row * stride_mr
    for c in range(n):
        share = tl.exp2(tl.load(lse_row + c * stride_lc + lane) - total)
        tl.store(mass_row + c, tl.sum(tl.reshape(share, [HEADS, QUERIES]), 1) / QUERIES)


def _launch(q, k, index, member, count, heads, block_size, scale, queries):
    """``mass [Hq, nq, C]``: :func:`_block_mass_kernel` over ``heads`` query heads a
    list; NaN past each row's count."""
    q_len, num_q_heads, head_dim = q.shape
    kv_len, num_kv_heads, _ = k.shape
    lists, nq, width = index.shape
    lse = torch.empty(lists, nq, width, heads * queries, dtype=torch.float32, device=q.device)
    mass = torch.full((num_q_heads, nq, width), float("nan"), device=q.device)
    _block_mass_kernel[(nq, lists)](
        q, k, index, index if member is None else member, count, lse, mass,
        q_len, kv_len, (kv_len - q_len) // block_size, scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        index.stride(0), index.stride(1), count.stride(0),
        lse.stride(0), lse.stride(1), lse.stride(2), mass.stride(0), mass.stride(1),
        HEADS=heads, LISTS_PER_KV_HEAD=lists // num_kv_heads, MEMBERS=member is not None,
        BLOCK=block_size, QUERIES=queries, HEAD_DIM=head_dim,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    return mass


def sampled_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    index: torch.Tensor,
    count: torch.Tensor,
    block_size: int,
    scale: float,
    queries: int = 16,
) -> torch.Tensor:
    """``mass [Hq, nq, C]`` float32 of each query head's own lists (``index [Hq, nq, C]``,
    ``count [Hq, nq]``, e.g. ``find_blocks``' ``kv_index`` / ``kv_count``); NaN past
    each row's count."""
    return _launch(q, k, index, None, count, 1, block_size, scale, queries)


def union_lists(masks: torch.Tensor, group: int):
    """Per KV head and query block the union of its ``group`` query heads' candidates
    (``masks [Hq, nq, nk]`` bool, e.g. ``index_to_masks`` of ``find_blocks``' lists):
    ``(union [Hk, nq, U]`` int32 ascending, ``member [Hk, nq, U]`` int32 bit g: query
    head g lists it, ``union_count [Hk, nq])``."""
    heads, nq, nk = masks.shape
    masks = masks.view(heads // group, group, nq, nk)
    bits = (masks.int() << torch.arange(group, device=masks.device)[:, None, None]).sum(1)
    union_count = (bits > 0).sum(-1).int()
    order = torch.sort((bits > 0).int(), dim=-1, descending=True, stable=True).indices
    order = order[..., : int(union_count.max().item())]
    return order.int(), bits.gather(-1, order).int(), union_count


def grouped_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    union: torch.Tensor,
    member: torch.Tensor,
    union_count: torch.Tensor,
    block_size: int,
    scale: float,
    queries: int = 16,
) -> torch.Tensor:
    """``mass [Hq, nq, U]`` float32: query head h's mass on union slot c of its KV
    head's lists (:func:`union_lists`), 0 where h does not list it, NaN past the count."""
    group = q.shape[1] // k.shape[1]
    return _launch(q, k, union, member, union_count, group, block_size, scale, queries)
