"""What the re-rank of ``refine.py`` would cost at 128K (H200; issue 14's prototype, not in
the package): the prototype kernel (``rerank_kernel.py``) beside the sparse attention it
would precede, in one run, on the kernel benchmark's planted Llama-3.1-8B layer.

Per pair of vsgrid settings (the kept γ, the candidates' γ): the block lists of the kept γ
(``find_blocks``) timed through ``block_sparse_attention`` (the backend's default launch),
and the re-rank with 8 and 16 sampled queries timed on the candidates' lists (the lists of a
higher γ stand in for the kept γ's "widen x count" candidates: the kernel's cost follows the
number of candidate tiles, printed as densities) and on the kept lists themselves; and the
KV-head-grouped kernel on the candidates' union lists, with the share of tiles it loads.
Times: medians of ``triton.testing.do_bench`` interleaved (``common.interleaved``).

Usage (from the repository root, after scripts/gpu_setup.sh):
python benchmarks/results/2026-12-05-run28/scripts/bench_rerank.py --out DIR
Writes DIR/bench_rerank.json and DIR/bench_rerank.md."""
import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[3] / "scripts")]
from common import LAYERS, B, Layer, interleaved, planted, run_meta, vsgrid_config  # noqa: E402
from rerank_kernel import grouped_block_mass, sampled_block_mass, union_lists  # noqa: E402
from vllm_flexprefill.kernels import SparsePlan, index_to_masks  # noqa: E402
from vllm_flexprefill.kernels.search import find_blocks  # noqa: E402
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention  # noqa: E402

PAIRS = [(0.85, 0.95), (0.9, 0.97), (0.835, 0.93)]


def pair_union_tiles(masks: torch.Tensor, group: int) -> int:
    """Tiles a kernel taking two neighbouring query blocks of a KV head a program would
    load (``masks [Hq, nq, nk]``): the union of the group's candidates over each pair of
    rows."""
    heads, nq, nk = masks.shape
    union = masks.view(heads // group, group, nq, nk).any(1)
    union = torch.nn.functional.pad(union, (0, 0, 0, nq % 2))
    return union.view(heads // group, -1, 2, nk).any(2).sum().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=131072)
    a = ap.parse_args()
    n = a.tokens
    layer = Layer(*planted(n, n, LAYERS["llama-3.1-8b"]), [n], False)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), layer.kv()
    q, k = layer.q, layer.k
    heads, head_dim = q.shape[1], q.shape[2]
    scale = head_dim**-0.5
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
    fa3 = layer.fa3_ms([n])
    pairs = sum(plan.causal_pairs) * heads
    rows = []
    for kept_gamma, wide_gamma in PAIRS:
        kept = find_blocks(q, kv, plan, vsgrid_config(kept_gamma), scale, dense, None)
        wide = find_blocks(q, kv, plan, vsgrid_config(wide_gamma), scale, dense, None)
        fns = dict(
            attention=partial(
                block_sparse_attention, q, kv, plan, kept.kv_index, kept.kv_count, scale, out
            )
        )
        for queries in (8, 16):
            for name, lists in (("wide", wide), ("kept", kept)):
                fns[f"rerank{queries}_{name}"] = partial(
                    sampled_block_mass, q, k, lists.kv_index, lists.kv_count, B, scale, queries
                )
        # the union lists of each KV head's query heads (built here by the host, untimed)
        group = heads // k.shape[1]
        wide_masks = index_to_masks(plan, wide.kv_index, wide.kv_count)[0]
        union = union_lists(wide_masks, group)
        for queries in (8, 16):
            fns[f"grouped{queries}_wide"] = partial(
                grouped_block_mass, q, k, *union, B, scale, queries
            )
        for fn in fns.values():  # compile
            fn()
        torch.cuda.synchronize()
        times = interleaved(fns, rounds=2)
        row = dict(
            # tiles the grouped kernel loads over those of one program per query head
            group_union_share=union[2].sum().item() / wide.kv_count.sum().item(),
            # ... and with two neighbouring query blocks a program
            pair_union_share=pair_union_tiles(wide_masks, group) / wide.kv_count.sum().item(),
            tokens=n,
            kept_gamma=kept_gamma,
            wide_gamma=wide_gamma,
            kept_density=kept.kv_count.sum().item() / pairs,
            wide_density=wide.kv_count.sum().item() / pairs,
            fa3_ms=fa3,
            **{f"{name}_ms": ms for name, ms in times.items()},
        )
        print(row, flush=True)
        rows.append(row)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    meta = run_meta()
    (outdir / "bench_rerank.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [
        f"# Re-rank prototype at {n // 1024}K ({meta['date']}, git {meta['git']}, `{meta['command']}`)",
        "",
        "| kept γ | density | attention ms | candidates γ | density | re-rank 8 q ms | 16 q ms | 8 q on kept | 16 q on kept | grouped tiles | two-row tiles | grouped 8 q ms | grouped 16 q ms | FA3 dense ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['kept_gamma']} | {r['kept_density']:.3f} | {r['attention_ms']:.2f} | {r['wide_gamma']} "
            f"| {r['wide_density']:.3f} | {r['rerank8_wide_ms']:.2f} | {r['rerank16_wide_ms']:.2f} "
            f"| {r['rerank8_kept_ms']:.2f} | {r['rerank16_kept_ms']:.2f} | {r['group_union_share']:.2f} "
            f"| {r['pair_union_share']:.2f} "
            f"| {r['grouped8_wide_ms']:.2f} | {r['grouped16_wide_ms']:.2f} | {r['fa3_ms']:.2f} |"
        )
    (outdir / "bench_rerank.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
