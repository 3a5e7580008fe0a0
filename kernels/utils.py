"""Small host-side helpers shared by the kernels' launchers."""

from __future__ import annotations

import torch

ALIGNMENT = 4  # 4-byte elements per 16 bytes


def aligned(count: int) -> int:
    """``count`` 4-byte elements rounded up to whole 16-byte units. Triton specialises
    kernels on 16-byte pointer alignment, so views into shared buffers start there:
    offsets that follow the batch's sizes would otherwise compile new variants."""
    return -(-count // ALIGNMENT) * ALIGNMENT


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs (tests) multiply in full precision; half types use the
    tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"
