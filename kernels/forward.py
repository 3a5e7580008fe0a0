"""The whole FlexPrefill operation on a batch: :func:`flex_prefill_forward` (the search,
then the block-sparse attention) and :func:`warm_up`, which compiles every kernel
variant a request needs.

One compiled variant per kernel serves every batch: Triton specialises integer arguments
on divisibility by 16 (and equality to 1) and pointers on 16-byte alignment, so the
kernels mark the arguments that follow the batch's sizes (strides of per-block buffers,
block counts, views at size-dependent offsets) ``do_not_specialize``, and
:class:`SparsePlan` aligns its per-request arrays. :func:`warm_up` at start-up then
compiles everything a request needs (``tests/test_warm_up.py`` checks the launch keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch

from vllm_flexprefill.blocks import cdiv
from vllm_flexprefill.config import FlexPrefillConfig
from vllm_flexprefill.inputs import TRITON_DTYPES

from .plan import KVSource, SparsePlan
from .search import SearchResult, find_blocks
from .sparse_attention import block_sparse_attention


def flex_prefill_forward(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    config: FlexPrefillConfig | Sequence[FlexPrefillConfig],
    scale: float,
    dense: torch.Tensor,
    out: torch.Tensor,
    q_scale: torch.Tensor | None = None,
) -> SearchResult:
    """FlexPrefill attention of the plan's query rows, written into ``out``.

    ``q [total_q, Hq, D]`` (bf16, fp16, fp32, or fp8 with its float32 ``q_scale``);
    ``out`` the same shape, 16-bit or float32; ``config``: the settings, or one per
    request (see :func:`find_blocks`); ``dense [R]`` bool marks requests that attend
    every causal block.
    """
    result = find_blocks(q, kv, plan, config, scale, dense, q_scale)
    block_sparse_attention(
        q, kv, plan, result.kv_index, result.kv_count, scale, out, q_scale=q_scale,
    )  # fmt: skip
    return result


def warm_up(
    dtype: torch.dtype,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    page_size: int,
    device: torch.device,
    fp8: bool = False,
) -> None:
    """Compile every kernel for this shape family (each kernel's compile-time constants
    depend only on these), by running one tiny paged batch: a fresh prompt and a chunk
    after cached context. ``dtype`` is the model's (queries and output); ``fp8``: an
    fp8 cache and fp8 queries, as vLLM's ``--kv-cache-dtype fp8`` gives them. Call at
    start-up so no request pays for Triton's JIT."""
    if dtype not in TRITON_DTYPES:
        allowed = ", ".join(map(str, TRITON_DTYPES))
        raise ValueError(f"dtype: {dtype}; allowed: {allowed}")
    sizes = get_args(FlexPrefillConfig.model_fields["block_size"].annotation)
    if block_size not in sizes:
        allowed = " or ".join(map(str, sizes))
        raise ValueError(f"block_size: {block_size!r}; allowed: {allowed}")
    B = block_size
    q_lens, kv_lens = [2 * B, B], [2 * B, 3 * B]
    gen = torch.Generator(device=device).manual_seed(0)
    stored = torch.float8_e4m3fn if fp8 else dtype
    q = torch.randn(
        sum(q_lens), num_q_heads, head_dim, generator=gen, device=device
    ).to(stored)
    pages = cdiv(max(kv_lens), page_size)
    cache = torch.randn(
        len(kv_lens) * pages + 1,
        2,
        page_size,
        num_kv_heads,
        head_dim,
        generator=gen,
        device=device,
    ).to(stored)
    # separate allocations, aligned as vLLM's per-layer scales are
    scales = [
        torch.ones((), dtype=torch.float32, device=device) if fp8 else None
        for _ in range(3)
    ]
    table = torch.arange(
        1, len(kv_lens) * pages + 1, dtype=torch.int32, device=device
    ).view(len(kv_lens), pages)
    plan = SparsePlan.build(q_lens, kv_lens, B, device)
    # a paper request beside each other selection: the two batches run every kernel
    # (a rerank request's thresholds are their own variant)
    paper = FlexPrefillConfig(block_size=B, min_budget=B, dense_threshold=0)
    dense = torch.zeros(len(q_lens), dtype=torch.bool, device=device)
    for selection in ("vsgrid", "rerank"):
        flex_prefill_forward(
            q,
            KVSource(cache[:, 0], cache[:, 1], table, scales[1], scales[2]),
            plan,
            [paper, paper.with_overrides({"selection": selection})],
            head_dim**-0.5,
            dense,
            torch.empty_like(q, dtype=dtype),
            q_scale=scales[0],
        )
