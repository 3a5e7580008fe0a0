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
