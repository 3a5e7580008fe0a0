"""Inputs shared by the kernel tests: varlen batches, plans and paged copies of K/V."""

from __future__ import annotations

import torch

from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.synthetic import paged_copy as paged  # noqa: F401 (re-exported for the tests)


def varlen_batch(q_lens, kv_lens, hq, hkv, d, dtype=torch.float32, device="cpu", seed=0):
    """Random packed ``q [sum q_lens, Hq, D]``, ``k, v [sum kv_lens, Hkv, D]``."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lens), hq, d, generator=gen)
    k = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    v = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def plan_for(q_lens, kv_lens, block_size, device="cpu", q_starts=None) -> SparsePlan:
    return SparsePlan.build(list(q_lens), list(kv_lens), block_size, device, q_starts=q_starts)
