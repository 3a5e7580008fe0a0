"""Triton kernels of vllm-flexprefill (installed as ``vllm_flexprefill.kernels``).

Free of vLLM imports, and of the PyTorch oracle they are tested against
(``vllm_flexprefill/reference.py``). Entry point: :func:`flex_prefill_forward` searches
and attends a varlen batch of prefill chunks whose keys and values sit in a contiguous
tensor or in vLLM's paged cache (:class:`KVSource`), laid out by a :class:`SparsePlan`;
:func:`find_blocks` is its search alone.
"""

if __name__ == "kernels":
    # Imported as a top-level ``kernels``: the repository root is on ``sys.path``
    # (``python -m`` or a script run from it) and this directory shadows the PyPI
    # package of that name, which transformers imports. Load that package instead.
    import sys
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec
    from pathlib import Path

    _root = Path(__file__).resolve().parents[1]
    _spec = PathFinder.find_spec(
        "kernels", [p for p in sys.path if Path(p or ".").resolve() != _root]
    )
    if _spec is None:
        raise ImportError(
            f"{_root / 'kernels'} is vllm_flexprefill.kernels, not a top-level package "
            "'kernels'; no other package of that name is installed"
        )
    sys.modules["kernels"] = module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["kernels"])
else:
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
