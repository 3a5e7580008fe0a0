"""Small host-side helpers shared by the kernels' launchers."""

from __future__ import annotations

import torch

from vllm_flexprefill.blocks import cdiv

ALIGNMENT = 16  # bytes


def aligned(count: int, element_bytes: int = 4) -> int:
    """``count`` elements rounded up to whole 16-byte units. Triton specialises
    kernels on 16-byte pointer alignment, so views into shared buffers start there:
    offsets that follow the batch's sizes would otherwise compile new variants."""
    per_unit = ALIGNMENT // element_bytes
    return cdiv(count, per_unit) * per_unit


def aligned_parts(
    sizes: list[int], dtype: torch.dtype, device: torch.device, zeroed: bool = False
) -> list[torch.Tensor]:
    """One allocation cut into 1-D parts of ``sizes`` elements, each starting at a
    16-byte boundary (see :func:`aligned`)."""
    padded = [aligned(n, dtype.itemsize) for n in sizes]
    new = torch.zeros if zeroed else torch.empty
    buffer = new(sum(padded), dtype=dtype, device=device)
    return [part[:n] for part, n in zip(buffer.split(padded), sizes, strict=True)]


def device_int32_parts(
    parts: list[list[int]], device: torch.device
) -> list[torch.Tensor]:
    """``parts`` (lists of integers) as int32 tensors on ``device``, each starting at
    a 16-byte boundary of one buffer, brought there by one host-to-device copy that
    never waits for the device."""
    padded = [aligned(len(part)) for part in parts]
    host = torch.tensor(
        [
            x
            for part, n in zip(parts, padded, strict=True)
            for x in part + [0] * (n - len(part))
        ],
        dtype=torch.int32,
    )
    chunks = host.to(device, non_blocking=True).split(padded)
    return [chunk[: len(part)] for chunk, part in zip(chunks, parts, strict=True)]


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs (tests) multiply in full precision; half types use the
    tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"
