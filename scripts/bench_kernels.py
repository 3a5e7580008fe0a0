"""Kernel benchmark on one Llama-3.1-8B attention layer (32 query / 8 KV heads, d 128, bf16):
FlexPrefill search + block-sparse attention against FA3 dense, measured in the same run.

Inputs come from ``vllm_flexprefill.synthetic.planted_qkv``: per KV head a sink and
stripes, per query head either a vertical-slash pattern (stripes, one far slash and a
power-law locality bias) or a query-aware clustered pattern (1 head in 4), so the
selected density is realistic (about 4-10% at 128K). Times are medians of
``triton.testing.do_bench``; TF/s counts 4*B*B*D FLOPs per computed block pair (diagonal
blocks as half, the FlashAttention causal convention); FA3 is
``vllm.vllm_flash_attn.flash_attn_varlen_func(..., causal=True, fa_version=3)``.

Usage: python scripts/bench_kernels.py --out DIR [--lengths 8192 32768 ...] [--sweep]
Writes DIR/bench_kernels.json and DIR/bench_kernels.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import triton

from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.kernels import KVSource, SparsePlan, flex_prefill_forward
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.sparse_attention import AttentionLaunch, block_sparse_attention
from vllm_flexprefill.synthetic import paged_copy as paged
from vllm_flexprefill.synthetic import planted_qkv

HQ, HKV, D, B = 32, 8, 128, 128
SCALE = D**-0.5


def paper_config(gamma: float = 0.9) -> FlexPrefillConfig:
    """The paper's settings (τ 0.1, 1024-token minimum budget), sparse at every length."""
    return FlexPrefillConfig(gamma=gamma, tau=0.1, block_size=B, min_budget=1024, dense_threshold=0)


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def fa3_dense_ms(q, k, v, q_lens) -> float:
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    return bench(lambda: flash_attn_varlen_func(
        q, k, v, max(q_lens), cu, max(q_lens), cu_seqlens_k=cu, softmax_scale=SCALE, causal=True, out=out,
        fa_version=3))


def computed_flops(plan, result) -> float:
    pairs = result.kv_count.sum().item() - 0.5 * result.kv_count.numel()
    return 4.0 * B * B * D * pairs


def causal_pairs(plan) -> int:
    return sum(ChunkGeometry(q, kv, B).num_causal_pairs for q, kv in zip(plan.q_lens, plan.kv_lens))


def measure(q, kv, plan, config, dense_ms, label, launch=None) -> dict:
    dense = torch.zeros(plan.num_requests, dtype=torch.bool, device="cuda")
    out = torch.empty_like(q)
    result = flex_prefill_forward(q, kv, plan, config, SCALE, dense, out)  # compile + warm up
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = find_blocks(q, kv, plan, config, SCALE, dense)
    block_sparse_attention(q, kv, plan, result.kv_index, result.kv_count, SCALE, out, launch=launch)
    torch.cuda.synchronize()
    peak_extra = torch.cuda.max_memory_allocated() - base
    search_ms = bench(lambda: find_blocks(q, kv, plan, config, SCALE, dense))
    attn_ms = bench(lambda: block_sparse_attention(q, kv, plan, result.kv_index, result.kv_count, SCALE, out,
                                                   launch=launch))
    total_ms = bench(lambda: (
        lambda r: block_sparse_attention(q, kv, plan, r.kv_index, r.kv_count, SCALE, out, launch=launch)
    )(find_blocks(q, kv, plan, config, SCALE, dense)))
    density = result.kv_count.sum().item() / (HQ * causal_pairs(plan))
    patterns = torch.bincount(result.pattern.flatten().long(), minlength=3).tolist()
    return dict(
        row=label, tokens=sum(plan.q_lens), gamma=config.gamma, density=density,
        search_ms=search_ms, attention_ms=attn_ms, tflops=computed_flops(plan, result) / attn_ms / 1e9,
        total_ms=total_ms, fa3_ms=dense_ms, speedup=dense_ms / total_ms, search_share=search_ms / total_ms,
        peak_extra_gb=peak_extra / 2**30, heads_vs_qa_dense=patterns,
    )


def planted(n: int, seed: int):
    q, k, v, _ = planted_qkv(n, HQ, HKV, D, B, seed=seed, dtype=torch.bfloat16, device="cuda")
    return q, k, v


def run(args) -> list[dict]:
    rows = []

    def attempt(fn):
        try:
            row = fn()
            rows.extend(row if isinstance(row, list) else [row])
            for r in row if isinstance(row, list) else [row]:
                print(json.dumps(r), flush=True)
        except Exception:  # keep measuring the other rows; the failure is in the log
            traceback.print_exc()

    for n in args.lengths:
        q, k, v = planted(n, seed=n)
        plan = SparsePlan.build([n], [n], B, "cuda")
        dense_ms = fa3_dense_ms(q, k, v, [n])
        for gamma in args.gammas:
            config = paper_config(gamma)
            attempt(lambda: measure(q, KVSource(k, v), plan, config, dense_ms, f"{n // 1024}K"))
        if n == max(args.lengths):
            config = paper_config()
            for page in (16, 128):  # vLLM's default page; the backend's (FlexPrefillBackend prefers 128)
                attempt(lambda: measure(q, paged(k, v, [n], page), plan, config, dense_ms, f"{n // 1024}K paged-{page}"))
            if args.sweep:
                attempt(lambda: sweep(q, KVSource(k, v), plan, config, dense_ms, n))
        del q, k, v
        torch.cuda.empty_cache()

    # A batch of 4 requests of 32K tokens (two fresh prompts, two chunks after 32K context).
    lens_q, lens_kv = [32768, 32768, 32768, 32768], [32768, 32768, 65536, 65536]
    parts = [planted(n, seed=i) for i, n in enumerate(lens_kv)]
    q = torch.cat([p[0][-m:] for p, m in zip(parts, lens_q)])
    k = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts])
    plan = SparsePlan.build(lens_q, lens_kv, B, "cuda")
    config = paper_config()
    attempt(lambda: measure(q, paged(k, v, lens_kv, 128), plan, config, fa3_batch_ms(q, k, v, lens_q, lens_kv),
                            "4 x 32K batch, paged-128"))
    return rows


def fa3_batch_ms(q, k, v, q_lens, kv_lens) -> float:
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    cq = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    ck = torch.tensor([0] + torch.tensor(kv_lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    return bench(lambda: flash_attn_varlen_func(
        q, k, v, max(q_lens), cq, max(kv_lens), cu_seqlens_k=ck, softmax_scale=SCALE, causal=True, out=out,
        fa_version=3))


def sweep(q, kv, plan, config, dense_ms, n) -> list[dict]:
    """Attention launch variants at the longest length, including program order (the
    GQA K/V-sharing question: heads of a group side by side or not)."""
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = find_blocks(q, kv, plan, config, SCALE, dense)
    out = torch.empty_like(q)
    rows = []
    variants = [AttentionLaunch(128, 8, 2, heads_fastest=hfast, heavy_first=hf, tma=tma)
                for hfast in (False, True) for tma in (False, True) for hf in (False, True)]
    variants += [AttentionLaunch(128, 8, 3, tma=True, heavy_first=True), AttentionLaunch(64, 4, 3, tma=True)]
    for launch in variants:
        try:
            ms = bench(lambda: block_sparse_attention(q, kv, plan, result.kv_index, result.kv_count, SCALE, out,
                                                      launch=launch))
            rows.append(dict(row=f"sweep {n // 1024}K", launch=str(launch), attention_ms=ms,
                             tflops=computed_flops(plan, result) / ms / 1e9))
        except Exception as err:  # a variant that does not compile (e.g. out of shared memory)
            rows.append(dict(row=f"sweep {n // 1024}K", launch=str(launch), error=repr(err)[:200]))
    return rows


def profile(n: int, out_dir: Path) -> None:
    """Per-kernel GPU time of one search and one attention pass (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    q, k, v = planted(n, seed=n)
    plan = SparsePlan.build([n], [n], B, "cuda")
    config = paper_config()
    kv, dense, out = KVSource(k, v), torch.zeros(1, dtype=torch.bool, device="cuda"), torch.empty_like(q)
    for _ in range(3):
        flex_prefill_forward(q, kv, plan, config, SCALE, dense, out)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            flex_prefill_forward(q, kv, plan, config, SCALE, dense, out)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60)
    (out_dir / f"profile_{n // 1024}K.txt").write_text(table)
    print(f"profile at {n // 1024}K (5 calls):\n{table}", flush=True)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Kernel benchmark ({meta['date']}, {meta['gpu']}, git {meta['git']})", "",
             f"Command: `{meta['command']}`", "",
             "| row | γ | density | search ms | sparse attn ms | TF/s (computed) | total ms | FA3 dense ms "
             "| speedup | search share | peak extra GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "speedup" in r:
            lines.append(
                f"| {r['row']} | {r['gamma']} | {100 * r['density']:.1f}% | {r['search_ms']:.2f} | "
                f"{r['attention_ms']:.2f} | {r['tflops']:.0f} | {r['total_ms']:.2f} | {r['fa3_ms']:.2f} | "
                f"{r['speedup']:.2f}x | {100 * r['search_share']:.0f}% | {r['peak_extra_gb']:.2f} |")
    sweeps = [r for r in rows if r["row"].startswith("sweep")]
    if sweeps:
        lines += ["", "Attention launch sweep:", "", "| launch | ms | TF/s |", "| --- | --- | --- |"]
        for r in sweeps:
            lines.append(f"| {r['launch']} | {r.get('attention_ms', float('nan')):.2f} | "
                         f"{r.get('tflops', float('nan')):.0f} |" if "error" not in r else f"| {r['launch']} | "
                         f"{r['error']} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 65536, 131072])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument("--sweep", action="store_true", help="also sweep attention launch parameters")
    parser.add_argument("--profile", action="store_true", help="print per-kernel GPU times of one search")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    meta = dict(
        date=time.strftime("%Y-%m-%d"), gpu=torch.cuda.get_device_name(),
        git=os.environ.get("GIT_REV") or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip(),
        command="python " + " ".join(sys.argv), torch=torch.__version__, triton=triton.__version__,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        for n in sorted({min(args.lengths), max(args.lengths)}):
            profile(n, args.out)
    rows = run(args)
    (args.out / "bench_kernels.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    table = markdown(rows, meta)
    (args.out / "bench_kernels.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
