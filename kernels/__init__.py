"""Triton kernels of vllm-flexprefill (installed as ``vllm_flexprefill.kernels``).

Free of vLLM imports, and of the PyTorch oracle they are tested against
(``vllm_flexprefill/reference.py``). Entry point: :func:`flex_prefill_forward` searches
and attends a varlen batch of prefill chunks whose keys and values sit in a contiguous
tensor or in vLLM's paged cache (:class:`KVSource`), laid out by a :class:`SparsePlan`;
:func:`find_blocks` is its search alone.
"""

from .block_index import index_to_masks
from .forward import flex_prefill_forward, warm_up
from .plan import KVSource, SparsePlan
from .search import SearchResult, find_blocks

__all__ = [
    "KVSource",
    "SearchResult",
    "SparsePlan",
    "find_blocks",
    "flex_prefill_forward",
    "index_to_masks",
    "warm_up",
]
