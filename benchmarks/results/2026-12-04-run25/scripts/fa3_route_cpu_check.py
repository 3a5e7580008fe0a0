"""CPU check of fa3_route.py: FA3's paged varlen semantics written out in PyTorch (as
in fa3_lists_cpu_check.py) stand in for FA3, and the route's output must match our
portable kernel's on the same lists, on batches with cached context, partial first
and last query blocks, GQA, and 16- and 32-token pages (32-token blocks; the real
route runs 128). Outputs are poisoned first. Usage (TRITON_INTERPRET=1):
R=REPO python fa3_route_cpu_check.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from fa3_route import fa3_block_sparse  # noqa: E402

from vllm_flexprefill.kernels import SparsePlan  # noqa: E402
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention  # noqa: E402
from vllm_flexprefill.synthetic import paged_copy  # noqa: E402


def fa3_semantics(
    q, key, value, max_q, cu_q, max_k, seqused_k, block_table, softmax_scale, causal,
    out,
):  # fmt: skip
    """What FA3's varlen forward computes with a page table: request e = rows
    ``cu_q[e] .. cu_q[e+1]`` of ``q [rows, 1, D]``, its keys the pages
    ``block_table[e]`` of ``key [N, P, 1, D]`` up to ``seqused_k[e]``, each query
    seeing keys up to ``seqused_k - rows + i`` (bottom-right causal)."""
    assert causal and q.shape[1] == 1 and key.shape[2] == 1
    P = key.shape[1]
    for e in range(len(cu_q) - 1):
        a, b, used = int(cu_q[e]), int(cu_q[e + 1]), int(seqused_k[e])
        assert b - a <= max_q and used <= max_k
        pages = block_table[e, : -(-used // P)].long()
        k = key[pages, :, 0].reshape(-1, key.shape[-1])[:used].double()
        v = value[pages, :, 0].reshape(-1, key.shape[-1])[:used].double()
        rows = b - a
        seen = torch.arange(used)[None, :] <= used - rows + torch.arange(rows)[:, None]
        logits = (q[a:b, 0].double() @ k.T * softmax_scale).masked_fill(
            ~seen, float("-inf")
        )
        out[a:b, 0] = (logits.softmax(-1) @ v).to(out.dtype)


def random_lists(plan: SparsePlan, hq: int, gen: torch.Generator):
    """Random sorted lists with the diagonal last: ``kv_index [hq, T, W]``, ``kv_count
    [hq, T]``."""
    T, W = plan.num_q_blocks, plan.max_k_blocks
    kv_index = torch.zeros(hq, T, W, dtype=torch.int32)
    kv_count = torch.zeros(hq, T, dtype=torch.int32)
    for t, a in enumerate(plan.block_row.tolist()):
        for h in range(hq):
            earlier = torch.nonzero(torch.rand(a, generator=gen) < 0.5).flatten()
            row = torch.cat([earlier, torch.tensor([a])])
            kv_index[h, t, : len(row)] = row.to(torch.int32)
            kv_count[h, t] = len(row)
    return kv_index, kv_count


def main() -> None:
    gen = torch.Generator().manual_seed(25)
    B, hq, hkv, d = 32, 4, 2, 32
    worst = 0.0
    for page, q_lens, kv_lens in (
        (16, [70, 45], [70, 141]),  # a fresh prompt; a chunk after 96 cached tokens
        (32, [33, 100, 64], [97, 100, 200]),  # partial first blocks, a full prompt
    ):
        plan = SparsePlan.build(q_lens, kv_lens, B, "cpu")
        q = torch.randn(sum(q_lens), hq, d, generator=gen)
        k, v = (torch.randn(sum(kv_lens), hkv, d, generator=gen) for _ in range(2))
        kv = paged_copy(k, v, kv_lens, page, seed=page)
        kv_index, kv_count = random_lists(plan, hq, gen)
        want = torch.full_like(q, float("nan"))
        block_sparse_attention(q, kv, plan, kv_index, kv_count, 0.3, want)
        got = torch.full_like(q, float("nan"))
        fa3_block_sparse(q, kv, plan, kv_index, kv_count, 0.3, got, fa3_semantics)
        assert not got.isnan().any()
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()
        worst = max(worst, err)
        print(f"pages {page}, q_lens {q_lens}, kv_lens {kv_lens}: relative error {err:.1e}")
    assert worst < 1e-5, worst
    print("route ok")


if __name__ == "__main__":
    main()
