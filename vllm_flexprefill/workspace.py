"""Start-up preparation of the sparse path: scratch memory and kernel compilation.

vLLM sizes the KV cache from a profiling run that never runs attention, so the
FlexPrefill search's scratch (per-key probe scores, the query-aware grid, the block
lists) must fit in what the KV cache leaves free. At start-up the builder reserves the
worst case for one step through PyTorch's caching allocator, so a configuration that
cannot fit fails then, with the numbers and the fix, and never mid-request. It also
compiles the Triton kernels then, so no request pays for the JIT.
"""

from __future__ import annotations

import torch
from vllm.logger import init_logger
from vllm.utils.torch_utils import is_quantized_kv_cache

from .blocks import cdiv
from .kernels import warm_up

logger = init_logger(f"vllm.{__name__}")  # under vLLM's configured "vllm" logger

GiB = 1 << 30
# set once this process has reserved the scratch and compiled the kernels
_prepared = False


def workspace_bytes(
    max_step_tokens: int,
    max_kv_tokens: int,
    max_model_len: int,
    max_requests: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
) -> int:
    """Upper bound of the search and attention scratch for one step.

    ``max_step_tokens`` queries in at most ``max_requests`` sparse requests whose keys
    total at most ``max_kv_tokens`` (each at most ``max_model_len``)."""
    q_blocks = max_step_tokens // block_size + max_requests
    k_blocks = cdiv(max_model_len, block_size)
    per_key = 2 * num_q_heads * max_kv_tokens * 4  # vertical and slash scores, float32
    # query-aware grid, block lists and the vsgrid estimate's two temporaries
    per_grid = 4 * num_q_heads * q_blocks * k_blocks * 4
    # block scores and their torch temporaries
    per_block = 12 * max_requests * num_q_heads * k_blocks * 4
    pooled = (
        4 * head_dim * (max_requests * num_kv_heads * k_blocks + q_blocks * num_q_heads)
    )
    return per_key + per_grid + per_block + pooled


def prepare_sparse_path(
    vllm_config, kv_cache_spec, device: torch.device, block_sizes: set[int]
) -> None:
    """Once per process: reserve the worst-case scratch (see :func:`workspace_bytes`)
    and compile the kernels for the model's head shape, dtype, KV-cache dtype and page
    size, at each sparse block size the layers use."""
    global _prepared
    if _prepared or device.type != "cuda" or not block_sizes:
        return
    model = vllm_config.model_config
    scheduler = vllm_config.scheduler_config
    cache = vllm_config.cache_config
    parallel = vllm_config.parallel_config
    block_size = min(block_sizes)  # the most query blocks per step
    step_tokens = scheduler.max_num_batched_tokens
    max_requests = max(1, min(scheduler.max_num_seqs, step_tokens // block_size))
    capacity = (
        cache.num_gpu_blocks or 0
    ) * kv_cache_spec.block_size or max_requests * model.max_model_len
    needed = workspace_bytes(
        step_tokens,
        min(capacity, max_requests * model.max_model_len),
        model.max_model_len,
        max_requests,
        model.get_num_attention_heads(parallel),
        model.get_num_kv_heads(parallel),
        model.get_head_size(),
        block_size,
    )
    try:
        # freed at once, kept by the allocator
        torch.empty(needed, dtype=torch.uint8, device=device)
    except torch.cuda.OutOfMemoryError:
        free = torch.cuda.mem_get_info(device)[0]
        raise RuntimeError(
            f"FLEXPREFILL needs {needed / GiB:.2f} GiB of prefill scratch beyond the "
            f"KV cache, but only {free / GiB:.2f} GiB is free. Lower "
            f"--gpu-memory-utilization (now {cache.gpu_memory_utilization}) "
            f"or --max-num-batched-tokens (now {step_tokens})."
        ) from None
    logger.info(
        "FlexPrefill reserved %.2f GiB of prefill scratch "
        "(%d tokens per step, max_model_len %d)",
        needed / GiB,
        step_tokens,
        model.max_model_len,
    )
    for size in sorted(block_sizes):
        warm_up(
            model.dtype,
            model.get_num_attention_heads(parallel),
            model.get_num_kv_heads(parallel),
            model.get_head_size(),
            size,
            kv_cache_spec.block_size,
            device,
            fp8=is_quantized_kv_cache(cache.cache_dtype),
        )
    _prepared = True
