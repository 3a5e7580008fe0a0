"""Kernel benchmark on one attention layer (``--layer``: Llama-3.1-8B's 32 query / 8 KV
heads of d 128, or Gemma-2-9B's 16 / 8 of d 256; bf16, or ``--kv-cache-dtype fp8``: fp8
queries, keys and values with per-tensor scales and a bf16 output, as vLLM's fp8 KV
cache runs): FlexPrefill search + block-sparse attention against FA3 dense (fp8 too),
measured in the same run.

Inputs come from ``vllm_flexprefill.synthetic.planted_qkv``: per KV head a sink and
stripes, per query head either a vertical-slash pattern (stripes, one far slash and a
power-law locality bias) or a query-aware clustered pattern (1 head in 4), so the
selected density is realistic (about 4-10% at 128K). Times are medians of
``triton.testing.do_bench`` (search, attention and total: each the mean of two timings
in opposite orders, see ``common.interleaved``), and the search's GPU time alone
(replayed from a CUDA graph: the host's launch cost left out); TF/s counts 4*B*B*D
FLOPs per computed block pair (diagonal blocks as half, the FlashAttention causal
convention); FA3 is
``vllm.vllm_flash_attn.flash_attn_varlen_func(..., causal=True, fa_version=3)``.

Rows per length and gamma (``--gammas``, the paper's selection), per
``--vsgrid-gammas`` (``selection: vsgrid``, no minimum budget) and per
``--rerank-gammas`` (``selection: rerank``, no minimum budget, on blocks of
``--rerank-block-size`` tokens, of ``--rerank-budget``).

Usage: python scripts/bench_kernels.py --out DIR [--lengths 8192 32768 ...] [--sweep]
           [--layer gemma-2-9b] [--kv-cache-dtype fp8] [--vsgrid-gammas 0.96 ...]
           [--rerank-gammas 0.9 ...] [--rerank-block-size 64] [--rerank-budget head]
Writes DIR/bench_kernels.json and DIR/bench_kernels.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from common import (
    LAYERS,
    B,
    Layer,
    attempt,
    bench,
    computed_flops,
    graph_ms,
    interleaved,
    length_label,
    paper_config,
    planted,
    run_meta,
    vsgrid_config,
)

from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.kernels import SparsePlan, flex_prefill_forward
from vllm_flexprefill.kernels.hopper_attention import HopperLaunch
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.sparse_attention import (
    AttentionLaunch,
    block_sparse_attention,
)

TABLE_HEADER = [
    "| row | γ | density | search ms | search GPU ms | sparse attn ms "
    "| TF/s (computed) | total ms | FA3 dense ms | speedup | search share "
    "| peak extra GB |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def measure(layer, kv, plan, config, dense_ms, label, launch=None) -> dict:
    """One table row: search, attention and total times, density, TF/s, peak extra
    memory (``layer`` a :class:`Layer`, ``kv`` its ``KVSource``, ``dense_ms`` FA3's
    time on the same requests)."""
    q, q_scale = layer.q, layer.q_scale
    heads, head_dim = q.shape[1], q.shape[2]
    scale = head_dim**-0.5
    dense = torch.zeros(plan.num_requests, dtype=torch.bool, device="cuda")
    out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
    search = partial(find_blocks, q, kv, plan, config, scale, dense, q_scale)

    def attend(result):
        block_sparse_attention(
            q, kv, plan, result.kv_index, result.kv_count, scale, out,
            launch=launch, q_scale=q_scale,
        )  # fmt: skip

    # compile, warm up
    flex_prefill_forward(q, kv, plan, config, scale, dense, out, q_scale=q_scale)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = search()
    attend(result)
    torch.cuda.synchronize()
    peak_extra = torch.cuda.max_memory_allocated() - base
    times = interleaved(
        dict(
            search=search,
            attention=partial(attend, result),
            total=lambda: attend(search()),
        ),
        rounds=2,
    )
    search_ms, attn_ms, total_ms = times["search"], times["attention"], times["total"]
    search_gpu_ms = graph_ms(search)
    density = result.kv_count.sum().item() / (heads * sum(plan.causal_pairs))
    patterns = torch.bincount(result.pattern.flatten().long(), minlength=3).tolist()
    return dict(
        row=label,
        tokens=sum(plan.q_lens),
        gamma=config.gamma,
        density=density,
        search_ms=search_ms,
        search_gpu_ms=search_gpu_ms,
        attention_ms=attn_ms,
        tflops=computed_flops(result, head_dim, config.block_size) / attn_ms / 1e9,
        total_ms=total_ms,
        fa3_ms=dense_ms,
        speedup=dense_ms / total_ms,
        search_share=search_ms / total_ms,
        peak_extra_gb=peak_extra / 2**30,
        heads_vs_qa_dense=patterns,
    )


def run(args) -> list[dict]:
    """Every row of the table, printed as measured."""
    rows = []
    for n in args.lengths:
        rows += length_rows(n, args)
        torch.cuda.empty_cache()
    return rows + attempt(partial(batch_row, args))


def length_rows(n: int, args) -> list[dict]:
    """One request of ``n`` tokens: a row per gamma; at the longest length also
    paged caches and the sweep."""
    layer = Layer(*planted(n, n, LAYERS[args.layer]), [n], args.kv_cache_dtype == "fp8")
    plan = SparsePlan.build([n], [n], B, "cuda")
    dense_ms = layer.fa3_ms([n])
    name = length_label(n)
    rows = []
    configs = [(paper_config(gamma), name) for gamma in args.gammas]
    configs += [
        (vsgrid_config(gamma), f"{name} vsgrid") for gamma in args.vsgrid_gammas
    ]
    rerank_label = f"{name} rerank"
    if args.rerank_block_size != B:
        rerank_label += f" block {args.rerank_block_size}"
    if args.rerank_budget != "row":
        rerank_label += f" {args.rerank_budget}-wide"
    configs += [(rerank_config(g, args), rerank_label) for g in args.rerank_gammas]
    plans = {B: plan}
    for config, label in configs:
        if config.block_size not in plans:
            plans[config.block_size] = SparsePlan.build(
                [n], [n], config.block_size, "cuda"
            )
        config_plan = plans[config.block_size]
        rows += attempt(
            partial(measure, layer, layer.kv(), config_plan, config, dense_ms, label)
        )
    if n == max(args.lengths):
        config = paper_config()
        for page in (16, 128):  # vLLM's default page; the backend's (it prefers 128)
            label = f"{name} paged-{page}"
            kv = layer.kv(page)
            paged_dense_ms = layer.fa3_ms([n], kv)
            rows += attempt(
                partial(measure, layer, kv, plan, config, paged_dense_ms, label)
            )
        if layer.fp8:  # the probability-value product in fp8 too
            default = AttentionLaunch.default(layer.q.shape[2])
            launch = replace(default, fp8_probabilities=True)
            label = f"{name} fp8 probabilities"
            rows += attempt(
                partial(
                    measure, layer, layer.kv(), plan, config, dense_ms, label, launch
                )
            )
        if args.sweep:
            rows += sweep(layer, plan, config, n)  # prints its rows as measured
    return rows


def batch_row(args) -> dict:
    """A batch of 4 requests of 32K tokens (two fresh prompts, two chunks after 32K
    context), paged-128."""
    lens_q, lens_kv = [32768, 32768, 32768, 32768], [32768, 32768, 65536, 65536]
    parts = [planted(n, i, LAYERS[args.layer]) for i, n in enumerate(lens_kv)]
    q = torch.cat([p[0][-m:] for p, m in zip(parts, lens_q, strict=True)])
    k = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts])
    layer = Layer(q, k, v, lens_kv, args.kv_cache_dtype == "fp8")
    plan = SparsePlan.build(lens_q, lens_kv, B, "cuda")
    label = "4 x 32K batch, paged-128"
    kv = layer.kv(128)
    return measure(layer, kv, plan, paper_config(), layer.fa3_ms(lens_q, kv), label)


def sweep(layer, plan, config, n) -> list[dict]:
    """Attention launch variants at the longest length: the warp-specialised kernel's
    warps and stages first, then the portable kernel's (program order, the GQA
    K/V-sharing question: heads of a group side by side or not, TMA)."""
    q, kv, q_scale = layer.q, layer.kv(), layer.q_scale
    scale = q.shape[2] ** -0.5
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    result = find_blocks(q, kv, plan, config, scale, dense, q_scale)
    out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
    portable = replace(AttentionLaunch.default(q.shape[2]), warp_specialized=None)
    variants = [
        replace(portable, warp_specialized=HopperLaunch(warps, stages))
        for warps in (8, 4)
        for stages in (2, 3)
    ]
    variants += [replace(portable, warp_specialized=HopperLaunch(4, 3, ping_pong=True))]
    variants += [portable]
    variants += [
        AttentionLaunch(128, 8, 2, heads_fastest=fast, heavy_first=heavy, tma=tma)
        for fast in (False, True)
        for tma in (False, True)
        for heavy in (False, True)
    ]
    variants += [
        AttentionLaunch(128, 8, 3, tma=True, heavy_first=True),
        AttentionLaunch(64, 4, 3, tma=True),
    ]
    index, count = result.kv_index, result.kv_count
    attention = partial(
        block_sparse_attention, q, kv, plan, index, count, scale, out, q_scale=q_scale
    )
    rows = []
    for launch in variants:
        row = dict(row=f"sweep {length_label(n)}", launch=str(launch))
        try:
            ms = bench(partial(attention, launch=launch))
            tflops = computed_flops(result, q.shape[2]) / ms / 1e9
            rows.append(row | dict(attention_ms=ms, tflops=tflops))
        except Exception as err:  # a variant that does not compile (shared memory)
            rows.append(row | dict(error=repr(err)[:200]))
        print(json.dumps(rows[-1]), flush=True)  # a cut run keeps what it measured
    return rows


def profile(n: int, args, config: FlexPrefillConfig, name: str) -> None:
    """Per-kernel GPU time of one search and one attention pass (torch.profiler)
    under ``config``; written to DIR/profile_{n}K_{name}.txt."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    layer = Layer(*planted(n, n, LAYERS[args.layer]), [n], args.kv_cache_dtype == "fp8")
    plan = SparsePlan.build([n], [n], config.block_size, "cuda")
    q, kv = layer.q, layer.kv()
    out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    forward = partial(
        flex_prefill_forward, q, kv, plan, config, q.shape[2] ** -0.5, dense, out,
        q_scale=layer.q_scale,
    )  # fmt: skip
    for _ in range(3):
        forward()
    torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            forward()
        torch.cuda.synchronize()
    table = prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=30, max_name_column_width=60
    )
    (args.out / f"profile_{length_label(n)}_{name}.txt").write_text(table)
    print(f"profile at {length_label(n)}, {name} (5 calls):\n{table}", flush=True)


def markdown(rows: list[dict], meta: dict) -> str:
    """bench_kernels.md: the table of rows, then the launch sweep where there is
    one."""
    title = f"# Kernel benchmark ({meta['date']}, {meta['gpu']}, git {meta['git']})"
    layer = f"Layer: {meta['layer']}, {meta['kv_cache_dtype']} inputs."
    lines = [title, "", f"Command: `{meta['command']}`", "", layer, "", *TABLE_HEADER]
    lines += [table_line(r) for r in rows if "speedup" in r]
    sweeps = [r for r in rows if r["row"].startswith("sweep")]
    if sweeps:
        lines += ["", "Attention launch sweep:", ""]
        lines += ["| launch | ms | TF/s |", "| --- | --- | --- |"]
        lines += [sweep_line(r) for r in sweeps]
    return "\n".join(lines) + "\n"


def table_line(r: dict) -> str:
    gpu_ms = "-" if r["search_gpu_ms"] is None else f"{r['search_gpu_ms']:.2f}"
    return (
        f"| {r['row']} | {r['gamma']} | {100 * r['density']:.1f}% "
        f"| {r['search_ms']:.2f} | {gpu_ms} | {r['attention_ms']:.2f} "
        f"| {r['tflops']:.0f} "
        f"| {r['total_ms']:.2f} | {r['fa3_ms']:.2f} | {r['speedup']:.2f}x "
        f"| {100 * r['search_share']:.0f}% | {r['peak_extra_gb']:.2f} |"
    )


def sweep_line(r: dict) -> str:
    if "error" in r:
        return f"| {r['launch']} | {r['error']} | |"
    return f"| {r['launch']} | {r['attention_ms']:.2f} | {r['tflops']:.0f} |"


def rerank_config(gamma: float, args: argparse.Namespace) -> FlexPrefillConfig:
    """A rerank row's config: ``selection: rerank`` at ``gamma``, no minimum budget, on
    ``--rerank-block-size`` blocks, of ``--rerank-budget``."""
    config = vsgrid_config(gamma, "rerank", args.rerank_block_size)
    return config.with_overrides({"rerank_budget": args.rerank_budget})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[8192, 32768, 65536, 131072]
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument(
        "--vsgrid-gammas",
        type=float,
        nargs="*",
        default=[0.96],
        help="rows of selection vsgrid (no minimum budget) at these gammas",
    )
    parser.add_argument(
        "--rerank-gammas",
        type=float,
        nargs="*",
        default=[],
        help="rows of selection rerank (no minimum budget) at these gammas",
    )
    parser.add_argument(
        "--rerank-block-size",
        type=int,
        choices=[64, 128],
        default=B,
        help="the rerank rows' block size (the paper's rows keep 128)",
    )
    parser.add_argument(
        "--rerank-budget",
        choices=["row", "head"],
        default="row",
        help="the rerank rows' rerank_budget",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also sweep attention launch parameters"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print per-kernel GPU times of one search",
    )
    parser.add_argument("--layer", choices=list(LAYERS), default="llama-3.1-8b")
    parser.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "fp8"],
        default="auto",
        help="fp8: fp8 queries, keys and values, as vLLM's fp8 KV cache runs",
    )
    args = parser.parse_args()
    meta = run_meta(layer=args.layer, kv_cache_dtype=args.kv_cache_dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        configs = [(paper_config(), "paper")]
        configs += [(vsgrid_config(g), f"vsgrid-{g}") for g in args.vsgrid_gammas]
        configs += [(rerank_config(g, args), f"rerank-{g}") for g in args.rerank_gammas]
        for n in sorted({min(args.lengths), max(args.lengths)}):
            for config, name in configs:
                profile(n, args, config, name)
    rows = run(args)
    results = json.dumps(dict(meta=meta, rows=rows), indent=1)
    (args.out / "bench_kernels.json").write_text(results)
    table = markdown(rows, meta)
    (args.out / "bench_kernels.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
