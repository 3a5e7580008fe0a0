"""What the tests share: random varlen batches, plans, the error measures, and the
tiny model's vLLM config."""

from __future__ import annotations

from pathlib import Path

import torch

from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.reference import expand_kv_heads


def varlen_batch(
    q_lens, kv_lens, hq, hkv, d, dtype=torch.float32, device="cpu", seed=0
):
    """Random packed ``q [sum q_lens, Hq, D]``, ``k, v [sum kv_lens, Hkv, D]``."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lens), hq, d, generator=gen)
    k = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    v = torch.randn(sum(kv_lens), hkv, d, generator=gen)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def plan_for(q_lens, kv_lens, block_size, device="cpu", q_starts=None) -> SparsePlan:
    return SparsePlan.build(
        list(q_lens), list(kv_lens), block_size, device, q_starts=q_starts
    )


# (query heads, KV heads, head dim, dtype) and page sizes (None: contiguous) the Hopper
# kernels' GPU tests cover: Llama's GQA, a small head dim, fp16 without GQA
HOPPER_SHAPES = [
    (32, 8, 128, torch.bfloat16),
    (12, 4, 64, torch.bfloat16),
    (8, 8, 128, torch.float16),
]
PAGE_SIZES = [None, 16, 128]


def scattered_batch(
    q_lens, kv_lens, q_starts, rows, hq, hkv, d, dtype, device, seed, block_size=128
):
    """``varlen_batch`` with request ``i``'s queries at rows ``q_starts[i]..`` of a
    random ``[rows, Hq, D]`` buffer, and the plan that places them there: ``(q, k, v,
    plan)`` for ``block_size``-token blocks."""
    q, k, v = varlen_batch(q_lens, kv_lens, hq, hkv, d, dtype, device, seed=seed)
    q_full = torch.randn(rows, hq, d, dtype=dtype, device=device)
    for start, chunk in zip(q_starts, q.split(list(q_lens)), strict=True):
        q_full[start : start + chunk.shape[0]] = chunk
    return (
        q_full,
        k,
        v,
        plan_for(q_lens, kv_lens, block_size, device, q_starts=q_starts),
    )


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``|got - want| / |want|`` (Frobenius norms, float64, on the CPU)."""
    got, want = got.double().cpu(), want.double().cpu()
    return ((got - want).norm() / want.norm()).item()


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """Bottom-right causal attention in float64: ``q [Lq, Hq, D]``,
    ``k, v [Lk, Hkv, D]`` (the queries are the last ``Lq`` of the ``Lk`` positions)
    -> ``[Lq, Hq, D]``."""
    q, k, v = (
        q.double(),
        expand_kv_heads(k, q.shape[1]).double(),
        expand_kv_heads(v, q.shape[1]).double(),
    )
    context = k.shape[0] - q.shape[0]
    visible = (
        torch.arange(k.shape[0])[None, :] <= torch.arange(q.shape[0])[:, None] + context
    )
    logits = torch.einsum("qhd,khd->hqk", q, k) * scale
    p = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    return torch.einsum("hqk,khd->qhd", p, v)


# Llama: 2 layers, 4 query / 2 KV heads, d 64
TINY_LLAMA = str(Path(__file__).parent / "data" / "tiny-llama")


def tiny_llama_config(**engine_args):
    """vLLM's config of the tiny model, dummy weights, fp16, 16-token pages unless
    ``engine_args`` say otherwise."""
    from vllm.engine.arg_utils import EngineArgs

    args = dict(
        model=TINY_LLAMA,
        skip_tokenizer_init=True,
        load_format="dummy",
        block_size=16,
        dtype="float16",
    )
    return EngineArgs(**(args | engine_args)).create_engine_config()
