"""The public functional API: FlexPrefill over a varlen batch of prefill chunks.

The inputs are checked before any work (``inputs.py``): a bad one raises one
``ValueError`` or ``TypeError`` whose message names the argument, what it got and what
is allowed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from .blocks import ChunkGeometry
from .config import FlexPrefillConfig, as_config
from .inputs import (
    Implementation,
    check_dtype,
    check_implementation,
    check_layer,
    check_shapes,
    check_tensors,
    check_triton_device,
    check_triton_head_dim,
    reference_memory_warning,
    request_lengths,
    resolve_implementation,
    softmax_scale_of,
)
from .kernels import (
    KVSource,
    SparsePlan,
    flex_prefill_forward,
    hopper_kernel_takes,
    index_to_masks,
)
from .reference import flex_prefill_reference
from .selection import RequestStats

# What config= accepts (see config.as_config).
ConfigLike = FlexPrefillConfig | str | os.PathLike[str] | Mapping[str, Any]


def flex_prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    config: ConfigLike | None = None,
    softmax_scale: float | None = None,
    return_stats: bool = False,
    *,
    layer: int | None = None,
    implementation: Implementation = "auto",
) -> torch.Tensor | tuple[torch.Tensor, list[RequestStats]]:
    """Causal FlexPrefill attention for a batch of requests.

    Args:
        q: ``[total_q, Hq, D]``; k, v: ``[total_k, Hkv, D]`` with ``Hq % Hkv == 0``,
            all three of one dtype on one device: float16, bfloat16 or float32
            (float64 too with ``implementation="reference"``).
        cu_seqlens_q, cu_seqlens_k: int32/int64 ``[num_requests + 1]`` offsets from 0,
            non-decreasing, ending at the token counts of q and k. Request ``i``'s
            queries are the **last** ``q_i = cu_seqlens_q[i+1] - cu_seqlens_q[i] >= 1``
            positions of its ``kv_i = cu_seqlens_k[i+1] - cu_seqlens_k[i] >= q_i`` keys
            (the first ``kv_i - q_i`` keys are cached context).
        config: FlexPrefillConfig, a preset name or YAML path, or a mapping of
            settings; default: the default preset.
        softmax_scale: a finite number > 0; defaults to ``1 / sqrt(D)``.
        return_stats: also return one :class:`RequestStats` per request.
        layer: layer index (an int >= 0), to apply the config's per-layer overrides
            (a config with ``layers`` needs one).
        implementation: ``"reference"`` (PyTorch oracle; its memory grows with
            ``q_len * kv_len``, and a call warns past
            ``REFERENCE_MEMORY_WARNING_BYTES`` per request), ``"triton"`` (the
            kernels, on CUDA tensors) or ``"auto"`` (the kernels on CUDA tensors, the
            reference otherwise).

    Returns:
        ``out`` with q's shape and dtype, or ``(out, stats)`` with ``return_stats``.

    Raises:
        ValueError, TypeError: a bad argument, before any work.
        ConfigError: a config that cannot be used.
    """
    check_implementation(implementation)
    check_layer(layer)
    if not isinstance(return_stats, bool):
        raise ValueError(
            f"return_stats must be True or False; got {type(return_stats).__name__} "
            f"{return_stats!r}"
        )
    config = as_config(config, "config")
    if config.layers and layer is None:
        raise ValueError(
            "layer must be a layer index (an int >= 0) when the config has per-layer "
            f"settings (layers: {len(config.layers)} override(s)); got None"
        )
    config = config.for_layer(layer)
    device, dtype = check_tensors(q, k, v)
    resolved = resolve_implementation(implementation, device)
    check_dtype(dtype, resolved, implementation)
    if resolved == "triton":
        check_triton_device(device, dtype)
    check_shapes(q, k, v)
    if resolved == "triton":
        check_triton_head_dim(q.shape[-1], implementation)
    q_lens, kv_lens = request_lengths(q, k, cu_seqlens_q, cu_seqlens_k)
    scale = softmax_scale_of(softmax_scale, q.shape[-1])
    if resolved == "triton":
        out, stats = _triton_batch(
            q, k, v, q_lens, kv_lens, config, scale, return_stats
        )
    else:
        warning = reference_memory_warning(q_lens, kv_lens, q, config.block_size)
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
        out, stats = _reference_batch(q, k, v, q_lens, kv_lens, config, scale)
    return (out, stats) if return_stats else out


def _reference_batch(q, k, v, q_lens, kv_lens, config, scale):
    out = torch.empty_like(q)
    stats = []
    # max_density auto: the break-even of the kernel the Triton path would run
    hopper = hopper_kernel_takes(q, KVSource(k, v), config.block_size)
    q_start = k_start = 0
    for q_len, kv_len in zip(q_lens, kv_lens, strict=True):
        rows, keys = slice(q_start, q_start + q_len), slice(k_start, k_start + kv_len)
        out[rows], _, request_stats = flex_prefill_reference(
            q[rows], k[keys], v[keys], config, scale, hopper_kernel=hopper
        )
        stats.append(request_stats)
        q_start, k_start = q_start + q_len, k_start + kv_len
    return out, stats


def _triton_batch(q, k, v, q_lens, kv_lens, config, scale, return_stats):
    # the kernels read rows of D contiguous elements
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    plan = SparsePlan.build(q_lens, kv_lens, config.block_size, q.device)
    dense = torch.tensor(
        [not config.runs_sparse(a, b) for a, b in zip(q_lens, kv_lens, strict=True)],
        device=q.device,
    )
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
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
