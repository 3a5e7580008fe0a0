"""Start-up preparation of the sparse path: scratch memory and kernel compilation.

vLLM sizes the KV cache from a profiling forward pass: what that pass peaks at stays
out of the cache. The pass computes no attention, so the FlexPrefill search's scratch
(per-key probe scores, the query-aware grid, the block lists) would not be counted, and
at a high ``--gpu-memory-utilization`` a long prefill could run out of memory
mid-request. So each call of a FLEXPREFILL layer in that pass (the one dummy run before
any KV cache exists) allocates, and frees, the worst case for one step
(:class:`StepScratch`): the KV cache is sized around it, and a configuration where it
cannot fit fails then, with the numbers and the fix. The
metadata builder compiles the kernels at start-up (:func:`compile_kernels`), so no
request pays for Triton's JIT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.logger import init_logger
from vllm.utils.torch_utils import is_quantized_kv_cache

from .blocks import cdiv
from .kernels import warm_up
from .kernels.rerank import HEAD_RECORD
from .kernels.top_mass import TopMassLaunch

logger = init_logger(f"vllm.{__name__}")  # under vLLM's configured "vllm" logger

GiB = 1 << 30
# set once this process has compiled the kernels
_compiled = False


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
    # a chunk that starts and ends inside blocks spans two more than its whole ones
    q_blocks = max_step_tokens // block_size + 2 * max_requests
    k_blocks = cdiv(max_model_len, block_size)
    scores = 2 * num_q_heads * max_kv_tokens * 4  # vertical and slash, float32
    # and the top-mass select's compact copy of them (at most 1 / TopMassLaunch.keep)
    per_key = scores + scores // TopMassLaunch.keep
    # query-aware grid, block lists and the vsgrid estimate's two temporaries
    per_grid = 4 * num_q_heads * q_blocks * k_blocks * 4
    # block scores and their torch temporaries
    per_block = 12 * max_requests * num_q_heads * k_blocks * 4
    pooled = (
        4 * head_dim * (max_requests * num_kv_heads * k_blocks + q_blocks * num_q_heads)
    )
    # rerank's head-wide bounds: a record of int32 counts a (request, head)
    head_records = 4 * max_requests * num_q_heads * HEAD_RECORD
    return per_key + per_grid + per_block + pooled + head_records


@dataclass(frozen=True)
class StepScratch:
    """What bounds one engine step's sparse-path scratch on this rank (see
    :func:`workspace_bytes`); the keys of its sparse requests are bounded by the KV
    cache, which :meth:`reserve` bounds by vLLM's share of the GPU less what is
    allocated when it runs. Requests that share prefix-cached pages count them once
    each, so the metadata builder holds a step to that bound
    (:meth:`key_budget`)."""

    step_tokens: int  # --max-num-batched-tokens
    max_model_len: int
    max_requests: int  # sparse requests in one step
    num_q_heads: int  # this rank's
    num_kv_heads: int
    head_dim: int
    block_size: int  # the smallest sparse block size: the most query blocks
    kv_bytes_per_token: int  # keys and values of every layer on this rank
    gpu_memory_utilization: float

    @classmethod
    def of(cls, vllm_config, block_size: int) -> StepScratch:
        model = vllm_config.model_config
        scheduler = vllm_config.scheduler_config
        cache = vllm_config.cache_config
        parallel = vllm_config.parallel_config
        step_tokens = scheduler.max_num_batched_tokens
        num_kv_heads = model.get_num_kv_heads(parallel)
        head_dim = model.get_head_size()
        element = (
            1 if is_quantized_kv_cache(cache.cache_dtype) else model.dtype.itemsize
        )
        return cls(
            step_tokens,
            model.max_model_len,
            max(1, min(scheduler.max_num_seqs, step_tokens // block_size)),
            model.get_num_attention_heads(parallel),
            num_kv_heads,
            head_dim,
            block_size,
            2 * model.get_num_layers(parallel) * num_kv_heads * head_dim * element,
            cache.gpu_memory_utilization,
        )

    def key_budget(self, kv_capacity_tokens: int | None) -> int:
        """The most keys a step's sparse requests may hold together: what the KV cache
        holds (``kv_capacity_tokens``; None: not known yet) and every request at the
        whole context, whichever is less."""
        whole = self.max_requests * self.max_model_len
        return whole if kv_capacity_tokens is None else min(kv_capacity_tokens, whole)

    def bytes(self, kv_capacity_tokens: int) -> int:
        """The worst case when the KV cache holds at most ``kv_capacity_tokens``."""
        return workspace_bytes(
            self.step_tokens,
            self.key_budget(kv_capacity_tokens),
            self.max_model_len,
            self.max_requests,
            self.num_q_heads,
            self.num_kv_heads,
            self.head_dim,
            self.block_size,
        )

    def reserve(self, device: torch.device) -> None:
        """During vLLM's profiling pass (before the KV cache exists): allocate and free
        the worst case, so the pass's peak, and so the KV cache's size, counts it. The
        cache can hold at most what vLLM's share of the GPU leaves now."""
        free, total = torch.cuda.mem_get_info(device)
        share = int(total * self.gpu_memory_utilization)
        capacity = max(0, share - torch.cuda.memory_allocated(device))
        needed = self.bytes(capacity // max(1, self.kv_bytes_per_token))
        try:
            torch.empty(needed, dtype=torch.uint8, device=device)
        except torch.cuda.OutOfMemoryError:
            raise RuntimeError(
                f"FLEXPREFILL needs {needed / GiB:.2f} GiB of prefill scratch for one "
                f"step, but only {free / GiB:.2f} GiB is free. Lower "
                f"--max-num-batched-tokens (now {self.step_tokens}), --max-num-seqs or "
                f"--max-model-len (now {self.max_model_len})."
            ) from None
        logger.info_once(
            "FlexPrefill: %.2f GiB of prefill scratch for one step counted in the "
            "memory profile (kept out of the KV cache)",
            needed / GiB,
        )


def compile_kernels(
    vllm_config, kv_cache_spec, device: torch.device, block_sizes: set[int]
) -> None:
    """Once per process: compile the kernels for the model's head shape, dtype,
    KV-cache dtype and page size, at each sparse block size the layers use."""
    global _compiled
    if _compiled or device.type != "cuda" or not block_sizes:
        return
    model = vllm_config.model_config
    parallel = vllm_config.parallel_config
    for size in sorted(block_sizes):
        warm_up(
            model.dtype,
            model.get_num_attention_heads(parallel),
            model.get_num_kv_heads(parallel),
            model.get_head_size(),
            size,
            kv_cache_spec.block_size,
            device,
            fp8=is_quantized_kv_cache(vllm_config.cache_config.cache_dtype),
        )
    _compiled = True
