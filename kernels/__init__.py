"""Triton kernels of vllm-flexprefill (installed as ``vllm_flexprefill.kernels``).

No module here imports vLLM, or the PyTorch oracle they are tested against
(``vllm_flexprefill/reference.py``); as ``vllm_flexprefill.kernels`` they share the
package's configuration and block geometry, and importing the package registers the
backend with vLLM when vLLM is installed (``vllm_flexprefill/__init__.py``).

Entry point: :func:`flex_prefill_forward` searches and attends a varlen batch of
prefill chunks whose keys and values sit in a contiguous tensor or in vLLM's paged
cache (:class:`KVSource`), laid out by a :class:`SparsePlan`; :func:`find_blocks` is
its search alone.
"""

# Imported as a top-level ``kernels``, the repository root is on ``sys.path``
# (``python -m`` or a script run from it) and this directory shadows the PyPI package
# of that name, which transformers imports when it is installed: then that package is
# loaded instead.
_pypi_kernels = None
if __name__ == "kernels":
    import sys
    from importlib.machinery import PathFinder
    from pathlib import Path

    _root = Path(__file__).resolve().parents[1]
    _pypi_kernels = PathFinder.find_spec(
        "kernels", [p for p in sys.path if Path(p or ".").resolve() != _root]
    )
if _pypi_kernels is not None:
    from importlib.util import module_from_spec

    sys.modules["kernels"] = module_from_spec(_pypi_kernels)
    _pypi_kernels.loader.exec_module(sys.modules["kernels"])
else:
    from .block_index import index_to_masks
    from .forward import flex_prefill_forward, warm_up
    from .plan import KVSource, SparsePlan
    from .search import SearchResult, find_blocks
    from .sparse_attention import hopper_kernel_runs, hopper_kernel_takes

    __all__ = [
        "KVSource",
        "SearchResult",
        "SparsePlan",
        "find_blocks",
        "flex_prefill_forward",
        "hopper_kernel_runs",
        "hopper_kernel_takes",
        "index_to_masks",
        "warm_up",
    ]
