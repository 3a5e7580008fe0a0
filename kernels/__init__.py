"""Triton kernels of vllm-flexprefill (installed as ``vllm_flexprefill.kernels``).

Free of vLLM imports. Entry point: :func:`flex_prefill_forward` searches and attends a
varlen batch of prefill chunks whose keys and values sit in a contiguous tensor or in
vLLM's paged cache (:class:`KVSource`), laid out by a :class:`SparsePlan`.
"""

from __future__ import annotations

import torch

from vllm_flexprefill.config import FlexPrefillConfig

from .plan import KVSource, SparsePlan
from .search import DENSE, QUERY_AWARE, VERTICAL_SLASH, SearchResult, find_blocks
from .sparse_attention import block_sparse_attention, index_to_masks

__all__ = [
    "DENSE", "QUERY_AWARE", "VERTICAL_SLASH", "KVSource", "SearchResult", "SparsePlan",
    "flex_prefill_forward", "index_to_masks",
]


def flex_prefill_forward(
    q: torch.Tensor,
    kv: KVSource,
    plan: SparsePlan,
    config: FlexPrefillConfig,
    scale: float,
    dense: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None = None,
) -> SearchResult:
    """FlexPrefill attention of the plan's query rows, written into ``out`` (and ``lse``).

    ``q, out [total_q, Hq, D]`` (bf16, fp16 or fp32); ``dense [R]`` bool marks requests
    that attend every causal block; ``lse [total_q, Hq]`` float32 or None.
    """
    result = find_blocks(q, kv, plan, config, scale, dense)
    block_sparse_attention(q, kv, plan, result.kv_index, result.kv_count, scale, out, lse)
    return result
