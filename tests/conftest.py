"""Test setup: GPU tests carry ``@pytest.mark.gpu`` and skip without CUDA. Without a
GPU, Triton kernels run through the Triton interpreter and vLLM runs on its CPU
platform, where its config, CLI, attention layers and metadata builders work
(``tests/test_backend.py``). ``scripts/`` is importable."""

import os
import sys
from pathlib import Path

import pytest
import torch

# The scripts import each other as `python scripts/NAME.py` has it (bench_e2e imports
# common); tests that check a script import it so.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Both before triton or vllm is imported anywhere: keeps vLLM's Triton enabled
    # and runs every kernel in the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    vllm.platforms._current_platform = CpuPlatform()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _poisoned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` filled with what no kernel writes: NaN, True, -77 (uint8: 77)."""
    if tensor.dtype.is_floating_point:
        return tensor.fill_(float("nan"))
    if tensor.dtype == torch.bool:
        return tensor.fill_(True)
    return tensor.fill_(77 if tensor.dtype == torch.uint8 else -77)


@pytest.fixture
def poisoned_scratch(monkeypatch):
    """``torch.empty`` and ``torch.empty_like`` poisoned (:func:`_poisoned`) while a
    test runs: the kernels' own scratch and outputs, which a test cannot pre-fill,
    show any entry that was read before it was written."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poisoned(empty(*a, **k)))
    monkeypatch.setattr(
        torch, "empty_like", lambda *a, **k: _poisoned(empty_like(*a, **k))
    )
