"""Prototype (issue 14, not in the package): the re-rank of ``refine.py`` as a Triton
kernel, to time it on the H200 beside the sparse attention (``bench_rerank.py``).

One program per (query head, query block) row: its ``QUERIES`` sampled queries (every
``B / QUERIES``-th query of the block, ending at its last; ``refine.sampled_positions``)
attend to the row's candidate key blocks, one ``[QUERIES, B]`` product a block; the
program writes each block's log2-sum-exp per query to ``lse`` while it keeps every
query's running total, then, from ``lse``, each block's mass averaged over the queries
(each query's softmax over the candidates' tokens).

Layouts (one request; contiguous keys): ``q [q_len, Hq, D]``, ``k [kv_len, Hk, D]``;
``index [Hq, nq, C]`` int32 key blocks of each row's candidates, ``count [Hq, nq]``
int32 how many; ``lse [Hq, nq, C, QUERIES]`` float32 scratch; ``mass [Hq, nq, C]``
float32 out (entries past ``count`` untouched). Query blocks are aligned to absolute
positions (block ``i`` of the chunk holds tokens ``(first + i) * B ...``)."""
import torch
import triton
import triton.language as tl

EMPTY = tl.constexpr(-1.0e30)  # a finite floor for running maxima (no inf - inf)


@triton.jit
def _sampled_block_mass_kernel(
    q, k, index, count, lse, mass,
    q_len, kv_len, first_q_block, scale_log2,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_ih, stride_ir, stride_ch, stride_lh, stride_lr, stride_lc,
    stride_mh, stride_mr,
    GROUP: tl.constexpr, BLOCK: tl.constexpr, QUERIES: tl.constexpr,
    HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    head = tl.program_id(1)
    context_len = kv_len - q_len
    step: tl.constexpr = BLOCK // QUERIES
    sample = tl.arange(0, QUERIES)
    position = (first_q_block + row) * BLOCK + sample * step + step - 1
    position = tl.minimum(tl.maximum(position, context_len), kv_len - 1)
    d = tl.arange(0, HEAD_DIM)
    queries = tl.load(
        q + (position - context_len)[:, None] * stride_qt + head * stride_qh + d[None, :]
    )
    index_row = index + head * stride_ih + row * stride_ir
    lse_row = lse + head * stride_lh + row * stride_lr
    n = tl.load(count + head * stride_ch + row)
    key_head = k + (head // GROUP) * stride_kh
    running_max = tl.full([QUERIES], EMPTY, tl.float32)
    running_sum = tl.zeros([QUERIES], tl.float32)
    for c in range(n):
        block = tl.load(index_row + c)
        keys = block * BLOCK + tl.arange(0, BLOCK)
        tile = tl.load(
            key_head + keys[None, :] * stride_kt + d[:, None],
            mask=keys[None, :] < kv_len,
            other=0.0,
        )  # [HEAD_DIM, BLOCK]
        s = tl.dot(queries, tile, input_precision=PRECISION) * scale_log2
        s = tl.where(keys[None, :] <= position[:, None], s, float("-inf"))
        block_max = tl.maximum(tl.max(s, 1), EMPTY)
        block_lse = block_max + tl.log2(tl.sum(tl.exp2(s - block_max[:, None]), 1))
        tl.store(lse_row + c * stride_lc + sample, block_lse)
        new_max = tl.maximum(running_max, block_lse)
        running_sum = running_sum * tl.exp2(running_max - new_max) + tl.exp2(
            block_lse - new_max
        )
        running_max = new_max
    total = running_max + tl.log2(running_sum)
    tl.debug_barrier()  # the stores above, read back by other threads below
    mass_row = mass + head * stride_mh + row * stride_mr
    for c in range(n):
        block_lse = tl.load(lse_row + c * stride_lc + sample)
        tl.store(mass_row + c, tl.sum(tl.exp2(block_lse - total), 0) / QUERIES)


def sampled_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    index: torch.Tensor,
    count: torch.Tensor,
    block_size: int,
    scale: float,
    queries: int = 16,
) -> torch.Tensor:
    """``mass [Hq, nq, C]`` float32 (see the module docstring); entries past each
    row's ``count`` are NaN."""
    q_len, num_q_heads, head_dim = q.shape
    kv_len, num_kv_heads, _ = k.shape
    _, nq, width = index.shape
    lse = torch.empty(num_q_heads, nq, width, queries, dtype=torch.float32, device=q.device)
    mass = torch.full((num_q_heads, nq, width), float("nan"), device=q.device)
    first = (kv_len - q_len) // block_size
    _sampled_block_mass_kernel[(nq, num_q_heads)](
        q, k, index, count, lse, mass,
        q_len, kv_len, first, scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        index.stride(0), index.stride(1), count.stride(0),
        lse.stride(0), lse.stride(1), lse.stride(2), mass.stride(0), mass.stride(1),
        GROUP=num_q_heads // num_kv_heads, BLOCK=block_size, QUERIES=queries,
        HEAD_DIM=head_dim,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    return mass


@triton.jit
def _grouped_block_mass_kernel(
    q, k, index, member, count, lse, mass,
    q_len, kv_len, first_q_block, scale_log2,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_ih, stride_ir, stride_ch, stride_lh, stride_lr, stride_lc,
    stride_mh, stride_mr,
    GROUP: tl.constexpr, BLOCK: tl.constexpr, QUERIES: tl.constexpr,
    HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The re-rank with a KV head's ``GROUP`` query heads sharing its key tiles: one
    program per (KV head, query block) row, ``GROUP x QUERIES`` query rows (head-major),
    over the union of the heads' candidates; ``member`` bit ``g`` of a union slot marks
    query head ``g``'s candidates (the others' rows see none of its keys)."""
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    context_len = kv_len - q_len
    step: tl.constexpr = BLOCK // QUERIES
    ROWS: tl.constexpr = GROUP * QUERIES
    lane = tl.arange(0, ROWS)
    head_in_group = lane // QUERIES
    position = (first_q_block + row) * BLOCK + (lane % QUERIES) * step + step - 1
    position = tl.minimum(tl.maximum(position, context_len), kv_len - 1)
    d = tl.arange(0, HEAD_DIM)
    queries = tl.load(
        q
        + (position - context_len)[:, None] * stride_qt
        + (kv_head * GROUP + head_in_group)[:, None] * stride_qh
        + d[None, :]
    )
    index_row = index + kv_head * stride_ih + row * stride_ir
    member_row = member + kv_head * stride_ih + row * stride_ir
    lse_row = lse + kv_head * stride_lh + row * stride_lr
    n = tl.load(count + kv_head * stride_ch + row)
    key_head = k + kv_head * stride_kh
    running_max = tl.full([ROWS], EMPTY, tl.float32)
    running_sum = tl.zeros([ROWS], tl.float32)
    for c in range(n):
        block = tl.load(index_row + c)
        heads = tl.load(member_row + c)
        keys = block * BLOCK + tl.arange(0, BLOCK)
        tile = tl.load(
            key_head + keys[None, :] * stride_kt + d[:, None],
            mask=keys[None, :] < kv_len,
            other=0.0,
        )  # [HEAD_DIM, BLOCK]
        s = tl.dot(queries, tile, input_precision=PRECISION) * scale_log2
        seen = (keys[None, :] <= position[:, None]) & (
            ((heads >> head_in_group) & 1) == 1
        )[:, None]
        s = tl.where(seen, s, float("-inf"))
        block_max = tl.maximum(tl.max(s, 1), EMPTY)
        block_lse = block_max + tl.log2(tl.sum(tl.exp2(s - block_max[:, None]), 1))
        tl.store(lse_row + c * stride_lc + lane, block_lse)
        new_max = tl.maximum(running_max, block_lse)
        running_sum = running_sum * tl.exp2(running_max - new_max) + tl.exp2(
            block_lse - new_max
        )
        running_max = new_max
    total = running_max + tl.log2(running_sum)
    tl.debug_barrier()  # the stores above, read back by other threads below
    g = tl.arange(0, GROUP)
    mass_row = mass + (kv_head * GROUP + g) * stride_mh + row * stride_mr
    for c in range(n):
        share = tl.exp2(tl.load(lse_row + c * stride_lc + lane) - total)
        per_head = tl.sum(tl.reshape(share, [GROUP, QUERIES]), 1) / QUERIES
        tl.store(mass_row + c, per_head)


def union_lists(index: torch.Tensor, count: torch.Tensor, group: int):
    """Per KV head and query block the union of its ``group`` query heads' lists
    (``index [Hq, nq, W]``, ``count [Hq, nq]``): ``(union [Hk, nq, U]`` int32 ascending,
    ``member [Hk, nq, U]`` int32 bit g: query head g lists it, ``union_count [Hk, nq])``."""
    heads, nq, width = index.shape
    listed = torch.arange(width, device=index.device) < count[..., None]
    nk = int(torch.where(listed, index, 0).max().item()) + 1  # slots past a count: junk
    masks = torch.zeros(heads, nq, nk + 1, dtype=torch.bool, device=index.device)
    masks.scatter_(2, torch.where(listed, index.long(), nk), True)
    masks = masks[..., :nk].view(heads // group, group, nq, nk)
    bits = (masks.int() << torch.arange(group, device=index.device)[:, None, None]).sum(1)
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
    q_len, num_q_heads, head_dim = q.shape
    kv_len, num_kv_heads, _ = k.shape
    group = num_q_heads // num_kv_heads
    _, nq, width = union.shape
    lse = torch.empty(num_kv_heads, nq, width, group * queries, dtype=torch.float32, device=q.device)
    mass = torch.full((num_q_heads, nq, width), float("nan"), device=q.device)
    first = (kv_len - q_len) // block_size
    _grouped_block_mass_kernel[(nq, num_kv_heads)](
        q, k, union, member, union_count, lse, mass,
        q_len, kv_len, first, scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        union.stride(0), union.stride(1), union_count.stride(0),
        lse.stride(0), lse.stride(1), lse.stride(2), mass.stride(0), mass.stride(1),
        GROUP=group, BLOCK=block_size, QUERIES=queries, HEAD_DIM=head_dim,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    return mass
