"""The public functional API: FlexPrefill over a varlen batch of prefill chunks."""

from __future__ import annotations

import math
from typing import Literal

import torch

from .blocks import ChunkGeometry
from .config import FlexPrefillConfig, load_config
from .kernels import KVSource, SparsePlan, flex_prefill_forward, index_to_masks
from .reference import flex_prefill_reference
from .selection import RequestStats

Implementation = Literal["auto", "reference", "triton"]


def flex_prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    config: FlexPrefillConfig | None = None,
    softmax_scale: float | None = None,
    return_stats: bool = False,
    *,
    layer: int | None = None,
    implementation: Implementation = "auto",
) -> torch.Tensor | tuple[torch.Tensor, list[RequestStats]]:
    """Causal FlexPrefill attention for a batch of requests.

    Args:
        q: ``[total_q, Hq, D]``; k, v: ``[total_k, Hkv, D]`` with ``Hq % Hkv == 0``.
        cu_seqlens_q, cu_seqlens_k: int ``[num_requests + 1]`` offsets. Request ``i``'s
            queries are the **last** ``q_i = cu_seqlens_q[i+1] - cu_seqlens_q[i]``
            positions of its ``kv_i = cu_seqlens_k[i+1] - cu_seqlens_k[i] >= q_i`` keys
            (the first ``kv_i - q_i`` keys are cached context).
        config: FlexPrefill settings (default: the ``default`` preset).
        softmax_scale: defaults to ``1 / sqrt(D)``.
        return_stats: also return one :class:`RequestStats` per request.
        layer: layer index, to apply the config's per-layer overrides.
        implementation: ``"reference"`` (PyTorch oracle), ``"triton"`` (the kernels;
            the default for CUDA tensors) or ``"auto"``.

    Returns:
        ``out`` with q's shape and dtype, or ``(out, stats)`` with ``return_stats``.
    """
    config = (config or load_config("default")).for_layer(layer)
    q_lens, kv_lens = _check_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if implementation == "auto":
        implementation = "triton" if q.is_cuda else "reference"
    if implementation == "triton":
        out, stats = _triton_batch(
            q, k, v, q_lens, kv_lens, config, scale, return_stats
        )
    elif implementation == "reference":
        out, stats = _reference_batch(q, k, v, q_lens, kv_lens, config, scale)
    else:
        raise ValueError(
            "implementation must be 'auto', 'reference' or 'triton', "
            f"got {implementation!r}"
        )
    return (out, stats) if return_stats else out


def _reference_batch(q, k, v, q_lens, kv_lens, config, scale):
    out = torch.empty_like(q)
    stats = []
    q_start = k_start = 0
    for q_len, kv_len in zip(q_lens, kv_lens, strict=True):
        rows, keys = slice(q_start, q_start + q_len), slice(k_start, k_start + kv_len)
        out[rows], _, request_stats = flex_prefill_reference(
            q[rows], k[keys], v[keys], config, scale
        )
        stats.append(request_stats)
        q_start, k_start = q_start + q_len, k_start + kv_len
    return out, stats


def _triton_batch(q, k, v, q_lens, kv_lens, config, scale, return_stats):
    plan = SparsePlan.build(q_lens, kv_lens, config.block_size, q.device)
    dense = torch.tensor(
        [not config.runs_sparse(a, b) for a, b in zip(q_lens, kv_lens, strict=True)],
        device=q.device,
    )
    out = torch.empty_like(q)
    result = flex_prefill_forward(q, KVSource(k, v), plan, config, scale, dense, out)
    if not return_stats:
        return out, None
    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    return out, [
        RequestStats.of(patterns, mask, ChunkGeometry(q_len, kv_len, config.block_size))
        for mask, patterns, q_len, kv_len in zip(
            masks, result.pattern.tolist(), q_lens, kv_lens, strict=True
        )
    ]


def _check_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k) -> tuple[list[int], list[int]]:
    """Validate shapes; return per-request (q_len, kv_len) as Python ints."""
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape:
        raise ValueError(
            f"expected q [T, Hq, D] and k, v [T, Hkv, D], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] != k.shape[2] or q.shape[1] % k.shape[1]:
        raise ValueError(
            "head dims must match and Hq must be a multiple of Hkv: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    if len(cq) != len(ck) or len(cq) < 2 or cq[0] != 0 or ck[0] != 0:
        raise ValueError(
            "cu_seqlens_q and cu_seqlens_k must both start at 0 and have "
            "num_requests + 1 entries"
        )
    q_lens = [b - a for a, b in zip(cq, cq[1:], strict=False)]
    kv_lens = [b - a for a, b in zip(ck, ck[1:], strict=False)]
    if cq[-1] != q.shape[0] or ck[-1] != k.shape[0]:
        raise ValueError(
            f"cu_seqlens end at {cq[-1]}, {ck[-1]} but q, k hold "
            f"{q.shape[0]}, {k.shape[0]} tokens"
        )
    for i, (ql, kl) in enumerate(zip(q_lens, kv_lens, strict=True)):
        if not 1 <= ql <= kl:
            raise ValueError(
                f"request {i}: need 1 <= q_len <= kv_len, got q_len={ql}, kv_len={kl}"
            )
    return q_lens, kv_lens
