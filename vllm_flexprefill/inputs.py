"""Checks of the functional API's arguments (``api.flex_prefill_attention``), run
before any work: a bad argument raises one ``ValueError`` or ``TypeError`` whose message
names the argument, what it got and what is allowed."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Literal

import torch
from triton import knobs

from .blocks import ChunkGeometry

Implementation = Literal["auto", "reference", "triton"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("auto", "reference", "triton")

# The q, k, v dtypes each implementation accepts (the reference also computes in
# float64; the kernels accumulate in float32).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
REFERENCE_DTYPES = (*TRITON_DTYPES, torch.float64)
OFFSET_DTYPES = (torch.int32, torch.int64)  # cu_seqlens_q, cu_seqlens_k
# The head dims D the kernels tile: products need 16 (16-bit tensor-core operands), and
# shared memory holds tiles up to 256.
TRITON_HEAD_DIMS = range(16, 257)

# A call on the PyTorch reference warns when one request's estimated peak memory
# (see _reference_peak_bytes) exceeds this many bytes.
REFERENCE_MEMORY_WARNING_BYTES = 2 * 1024**3


def check_implementation(implementation: Any) -> None:
    """Refuse an unknown implementation name."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            "implementation must be 'auto', 'reference' or 'triton', "
            f"got {implementation!r}"
        )


def check_layer(layer: Any) -> None:
    """Refuse a layer that is neither None nor an int >= 0 (bool included)."""
    if layer is None:
        return
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(
            "layer must be None or a layer index (an int >= 0), "
            f"got {layer!r} ({type(layer).__name__})"
        )
    if layer < 0:
        raise ValueError(
            f"layer must be None or a layer index (an int >= 0), got {layer}"
        )


def check_tensors(q: Any, k: Any, v: Any) -> tuple[torch.device, torch.dtype]:
    """Refuse q, k, v that are not tensors or do not share one device and one dtype;
    return that device and dtype."""
    named = {"q": q, "k": k, "v": v}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not q.device == k.device == v.device:
        raise ValueError(
            "q, k and v must be on one device, got "
            + ", ".join(f"{name} on {t.device}" for name, t in named.items())
        )
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(
            "q, k and v must share one dtype, got "
            + ", ".join(f"{name} {t.dtype}" for name, t in named.items())
        )
    return q.device, q.dtype


def resolve_implementation(implementation: Implementation, device: torch.device) -> str:
    """``"auto"`` -> ``"triton"`` on CUDA tensors, ``"reference"`` elsewhere."""
    if implementation != "auto":
        return implementation
    return "triton" if device.type == "cuda" else "reference"


def check_dtype(dtype: torch.dtype, resolved: str, requested: str) -> None:
    """Refuse a q, k, v dtype that the implementation in use cannot run."""
    allowed = TRITON_DTYPES if resolved == "triton" else REFERENCE_DTYPES
    if dtype in allowed:
        return
    if resolved == "reference":
        runner = f"implementation={requested!r} (the PyTorch reference)"
        hint = ""
    else:
        on_cuda = " on CUDA tensors" if requested == "auto" else ""
        runner = f"implementation={requested!r}{on_cuda} (the Triton kernels)"
        hint = "; torch.float64 runs on implementation='reference'"
    raise TypeError(
        f"q, k, v have dtype {dtype}, which {runner} does not run; allowed: "
        f"{', '.join(map(str, allowed))}{hint}"
    )


def check_triton_device(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse the Triton kernels on tensors outside CUDA, unless Triton's interpreter
    (``TRITON_INTERPRET=1``, for tests) runs them on the CPU; and bfloat16 under the
    interpreter, whose bfloat16 ``tl.dot`` is wrong (Triton 3.6)."""
    if device.type != "cuda" and not knobs.runtime.interpret:
        raise ValueError(
            "implementation='triton' runs the Triton kernels, which need CUDA "
            f"tensors, got q, k, v on {device}; pass CUDA tensors, or use "
            "implementation='reference' (or 'auto') on the CPU"
        )
    if knobs.runtime.interpret and dtype == torch.bfloat16:
        raise TypeError(
            "q, k, v have dtype torch.bfloat16, which Triton's interpreter "
            "(TRITON_INTERPRET=1) multiplies wrongly (Triton 3.6); allowed there: "
            "torch.float16, torch.float32, or implementation='reference'"
        )


def check_triton_head_dim(head_dim: int, requested: str) -> None:
    """Refuse a head dim the Triton kernels do not tile (``requested``: the
    ``implementation`` argument as passed)."""
    if head_dim not in TRITON_HEAD_DIMS:
        low, high = TRITON_HEAD_DIMS[0], TRITON_HEAD_DIMS[-1]
        on_cuda = " on CUDA tensors" if requested == "auto" else ""
        raise ValueError(
            f"implementation={requested!r}{on_cuda} (the Triton kernels) runs head "
            f"dims D in [{low}, {high}], got D {head_dim} (q [T, Hq, D]); other head "
            "dims run on implementation='reference'"
        )


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Refuse q, k, v that are not ``[T, Hq, D]``, ``[T, Hkv, D]`` with heads and a
    head dim, matching head dims and ``Hq % Hkv == 0``."""
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape:
        raise ValueError(
            f"expected q [T, Hq, D] and k, v [T, Hkv, D], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if 0 in (q.shape[1], k.shape[1], q.shape[2]):
        raise ValueError(
            "q, k, v need Hq >= 1 query heads, Hkv >= 1 KV heads and a head dim "
            f"D >= 1 (q [T, Hq, D], k, v [T, Hkv, D]), got {shapes}"
        )
    if q.shape[2] != k.shape[2] or q.shape[1] % k.shape[1]:
        raise ValueError(
            "head dims must match and Hq must be a multiple of Hkv: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}"
        )


def _offsets(cu_seqlens: Any, name: str) -> list[int]:
    """The entries of one ``cu_seqlens`` argument, refused unless it is a 1-D int32 or
    int64 tensor of at least two offsets, starting at 0, non-decreasing."""
    wanted = f"{name} must be a 1-D int32 or int64 torch.Tensor of offsets"
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"{wanted}, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in OFFSET_DTYPES:
        raise TypeError(f"{wanted}, got a {cu_seqlens.dtype} tensor")
    if cu_seqlens.dim() != 1:
        raise ValueError(f"{wanted}, got shape {tuple(cu_seqlens.shape)}")
    offsets = cu_seqlens.tolist()
    if len(offsets) < 2:
        raise ValueError(
            f"{name} must have num_requests + 1 >= 2 entries (there must be at least "
            f"one request), got {offsets}"
        )
    if offsets[0] != 0:
        raise ValueError(f"{name} must start at 0, got {offsets[0]} as entry 0")
    for i, (a, b) in enumerate(zip(offsets, offsets[1:], strict=False)):
        if b < a:
            raise ValueError(
                f"{name} must be non-decreasing, got entry {i + 1} = {b} after "
                f"entry {i} = {a}"
            )
    return offsets


def request_lengths(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens_q: Any, cu_seqlens_k: Any
) -> tuple[list[int], list[int]]:
    """Validate the offsets against q, k; return per-request (q_len, kv_len)."""
    cq = _offsets(cu_seqlens_q, "cu_seqlens_q")
    ck = _offsets(cu_seqlens_k, "cu_seqlens_k")
    if len(cq) != len(ck):
        raise ValueError(
            "cu_seqlens_q and cu_seqlens_k must both have num_requests + 1 entries, "
            f"got {len(cq)} and {len(ck)}"
        )
    if cq[-1] != q.shape[0] or ck[-1] != k.shape[0]:
        raise ValueError(
            f"cu_seqlens end at {cq[-1]}, {ck[-1]} but q, k hold "
            f"{q.shape[0]}, {k.shape[0]} tokens"
        )
    q_lens = [b - a for a, b in zip(cq, cq[1:], strict=False)]
    kv_lens = [b - a for a, b in zip(ck, ck[1:], strict=False)]
    for i, (ql, kl) in enumerate(zip(q_lens, kv_lens, strict=True)):
        if not 1 <= ql <= kl:
            raise ValueError(
                f"request {i}: need 1 <= q_len <= kv_len, got q_len={ql}, kv_len={kl}"
            )
    return q_lens, kv_lens


def softmax_scale_of(softmax_scale: Any, head_dim: int) -> float:
    """``softmax_scale`` as a float, refused unless a finite number > 0 (bool is
    not); None gives ``1 / sqrt(head_dim)``."""
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    wanted = "softmax_scale must be None (for 1/sqrt(D)) or a finite number > 0"
    if not isinstance(softmax_scale, Real) or isinstance(softmax_scale, bool):
        raise TypeError(
            f"{wanted}, got {softmax_scale!r} ({type(softmax_scale).__name__})"
        )
    if not (math.isfinite(softmax_scale) and softmax_scale > 0):
        raise ValueError(f"{wanted}, got {softmax_scale!r}")
    return float(softmax_scale)


def _reference_peak_bytes(
    q_len: int, kv_len: int, num_q_heads: int, block_size: int, dtype: torch.dtype
) -> int:
    """A rough upper bound on the PyTorch reference's peak memory for one request.

    The attention runs one head at a time but holds about four ``[q_len, kv_len]``
    score-sized matrices at once (scores, masked scores, their exponentials, masks);
    the probe about four ``[Hq, probe_len, kv_len]`` ones. Elements are float32
    (float64 for float64 inputs). At 32K tokens the attention term alone gives
    16 GiB, where 15.6 GB was measured.
    """
    element = 8 if dtype == torch.float64 else 4
    probe_len = ChunkGeometry(q_len, kv_len, block_size).probe_len
    return 4 * element * kv_len * (q_len + num_q_heads * probe_len)


def reference_memory_warning(
    q_lens: list[int], kv_lens: list[int], q: torch.Tensor, block_size: int
) -> str | None:
    """The warning for a reference call whose largest request is estimated past
    ``REFERENCE_MEMORY_WARNING_BYTES``, or None."""
    peaks = [
        _reference_peak_bytes(ql, kl, q.shape[1], block_size, q.dtype)
        for ql, kl in zip(q_lens, kv_lens, strict=True)
    ]
    i = max(range(len(peaks)), key=peaks.__getitem__)
    if peaks[i] <= REFERENCE_MEMORY_WARNING_BYTES:
        return None
    return (
        f"flex_prefill_attention: the PyTorch reference needs up to about "
        f"{peaks[i] / 2**30:.1f} GiB for request {i} (q_len={q_lens[i]}, "
        f"kv_len={kv_lens[i]}; over {REFERENCE_MEMORY_WARNING_BYTES / 2**30:.1f} "
        "GiB), growing with q_len * kv_len; CUDA tensors run the Triton kernels "
        "instead"
    )
