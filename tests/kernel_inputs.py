"""Inputs shared by the kernel tests: varlen batches and a paged copy of the keys."""

from __future__ import annotations

import torch

from vllm_flexprefill.kernels import KVSource, SparsePlan


def varlen_batch(q_lens, kv_lens, hq, hkv, d, dtype=torch.float32, device="cpu", seed=0):
    """Random packed ``q [sum q_lens, Hq, D]``, ``k, v [sum kv_lens, Hkv, D]``."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lens), hq, d, generator=gen)
    k = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    v = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def paged(k: torch.Tensor, v: torch.Tensor, kv_lens, page_size: int, seed: int = 0) -> KVSource:
    """Copy packed K/V into a vLLM-layout cache ``[pages, 2, page_size, Hkv, D]`` on shuffled
    pages (page 0 stays the unused null page) and return the paged :class:`KVSource`."""
    gen = torch.Generator().manual_seed(seed)
    pages_needed = [-(-n // page_size) for n in kv_lens]
    total = sum(pages_needed)
    order = (torch.randperm(total, generator=gen) + 1).tolist()
    cache = torch.full((total + 1, 2, page_size, *k.shape[1:]), float("nan"), dtype=k.dtype, device=k.device)
    table = torch.zeros(len(kv_lens), max(pages_needed) + 2, dtype=torch.int32)
    start = 0
    for i, n in enumerate(kv_lens):
        for p in range(pages_needed[i]):
            page = order.pop()
            table[i, p] = page
            tokens = slice(start + p * page_size, start + min(n, (p + 1) * page_size))
            count = tokens.stop - tokens.start
            cache[page, 0, :count] = k[tokens]
            cache[page, 1, :count] = v[tokens]
        start += n
    return KVSource(cache[:, 0], cache[:, 1], table.to(k.device))


def plan_for(q_lens, kv_lens, block_size, device="cpu", q_starts=None) -> SparsePlan:
    return SparsePlan.build(list(q_lens), list(kv_lens), block_size, device, q_starts=q_starts)
