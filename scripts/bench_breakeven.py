"""Break-even of the sparse path against FA3 dense, as a function of selected density:
where the density guard's ``max_density`` comes from.

One Llama-3.1-8B attention layer (32 query / 8 KV heads, d 128, bf16), keys and values
in a 128-token paged cache as the backend runs them, at the shapes vLLM's chunked
prefill produces: whole 16K (the default ``dense_threshold``), 32K and 128K prompts,
and the last 16K chunk of the 32K and 128K ones. Per shape:

* FA3 dense (``flash_attn_varlen_func``, paged, causal) on all 32 heads, and on 8 of
  them (does FA3's time scale with the heads it is given, as routing single heads
  would need?);
* the search (``find_blocks``; the default preset, or ``--config``'s settings, e.g.
  ``selection="rerank",block_size=64``, under ``max_density`` 1: the density it
  reports is its own selection's, never a dense rebuild's) on planted inputs
  (realistic structure) and on diffuse ones (near-uniform attention, as with dummy
  weights: every head query-aware, most blocks selected), timed eagerly (its host's
  launches included: what a step pays when the host is behind, a small model's case)
  and replayed from a CUDA graph (its GPU time alone: a large model's case, the host
  running ahead during the layer's GEMMs);
* the block-sparse attention on a synthetic selection of each density, at the
  configuration's block size: per head and query block, that fraction of its causal
  key blocks (the diagonal always), chosen at random; by the Hopper kernel (the
  default launch) and by the portable one (what runs on other GPUs and on the
  batches the Hopper kernel does not cover).

Crossovers: whole layer, the density where search + attention = FA3 (the search is
paid only by sparse layers), with the eager and with the GPU-only search time, the
search's time at each density linear between its two measurements (rerank's search
scores twice a row's count of candidates, so it grows with the density; the paper's
barely does); per head, where attention alone = FA3 (the layer's search is paid
anyway).

Usage: python scripts/bench_breakeven.py --out DIR [--config SPEC]
           [--kv-cache-dtype fp8]
       python scripts/bench_breakeven.py --out DIR --from-json RUN/breakeven.json
Writes DIR/breakeven.json, DIR/breakeven.md and, where matplotlib is installed,
DIR/breakeven.png; ``--from-json`` derives them anew from a run's measurements (no
GPU).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from common import (
    HKV,
    HQ,
    SCALE,
    D,
    Layer,
    bench,
    computed_flops,
    config_spec,
    fa3_ms,
    graph_ms,
    planted,
    run_meta,
)

from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.break_even import RANGES, range_of
from vllm_flexprefill.kernels import SparsePlan, find_blocks
from vllm_flexprefill.kernels.search import SearchResult
from vllm_flexprefill.kernels.sparse_attention import (
    AttentionLaunch,
    block_sparse_attention,
)

PAGE = 128
SHAPES = [  # label, queries, keys (the queries are the last ones)
    ("16K prompt", 16384, 16384),
    ("32K prompt", 32768, 32768),
    ("16K chunk at 32K", 16384, 32768),
    ("64K prompt", 65536, 65536),
    ("128K prompt", 131072, 131072),
    ("16K chunk at 128K", 16384, 131072),
]
DENSITIES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
QUARTER = HQ // 4  # heads of the FA3 subset measurement
# The attention kernels measured: the default launch (on Hopper the warp-specialised
# Gluon kernel) and the portable Triton kernel, which runs elsewhere and where the
# Hopper kernel does not cover a batch (fp8 caches among them).
KERNELS = {
    "hopper": AttentionLaunch.default(D),
    "portable": replace(AttentionLaunch.default(D), warp_specialized=None),
}


def synthetic_selection(plan: SparsePlan, density: float, seed: int) -> SearchResult:
    """Per (head, query block): ``round(density * causal blocks)`` (at least the
    diagonal) of its causal key blocks, at random, as the search lays them out."""
    dev = plan.block_row.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    W = plan.max_k_blocks
    row = plan.block_row.long()  # [T] absolute query block = its diagonal key block
    blocks = torch.arange(W, device=dev)
    keep = (density * (row + 1)).round().clamp(min=1)  # [T]
    scores = torch.rand(HQ, plan.num_q_blocks, W, generator=gen, device=dev)
    scores = torch.where(blocks <= row[:, None], scores, -1.0)
    scores = torch.where(blocks == row[:, None], 2.0, scores)  # the diagonal first
    order = scores.argsort(dim=-1, descending=True)
    ranks_kept = (blocks < keep[:, None]).expand_as(order)  # in rank order
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, ranks_kept)
    index = torch.where(chosen, blocks, W).sort(dim=-1).values.int()
    pattern = torch.zeros(plan.num_requests, HQ, dtype=torch.int8, device=dev)
    return SearchResult(index, chosen.sum(-1).int(), pattern)


def diffuse(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Near-uniform attention: small random queries and keys (bf16, on the GPU)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rand(heads):
        return torch.randn(n, heads, D, generator=gen, device="cuda").bfloat16()

    return 0.05 * rand(HQ), 0.05 * rand(HKV), rand(HKV)


def shape_rows(
    label: str, q_len: int, kv_len: int, fp8: bool, config: FlexPrefillConfig
) -> dict:
    """One shape's searches, FA3 times and attention curves; ``fp8``: queries, keys and
    values in fp8 with per-tensor scales, as vLLM's fp8 KV cache runs them (FA3's fp8
    pass; only the portable kernel takes fp8); ``config``: the search's settings and
    the blocks' size."""
    block_size = config.block_size
    plan = SparsePlan.build([q_len], [kv_len], block_size, "cuda")
    no_dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    searches = {}
    for inputs, make in (("planted", planted), ("diffuse", diffuse)):
        q, k, v = make(kv_len, seed=kv_len)
        layer = Layer(q[-q_len:].contiguous(), k, v, [kv_len], fp8)
        kv = layer.kv(PAGE)
        search = partial(
            find_blocks, layer.q, kv, plan, config, SCALE, no_dense, layer.q_scale
        )
        result = search()
        causal = HQ * sum(plan.causal_pairs)
        density = result.kv_count.sum().item() / causal
        searches[inputs] = dict(
            ms=bench(search), gpu_ms=graph_ms(search), density=density
        )
    q = layer.q
    dense_ms = layer.fa3_ms([q_len], kv)
    try:
        quarter = fa3_ms(
            q[:, :QUARTER],
            kv.key[:, :, : HKV // 4],
            kv.value[:, :, : HKV // 4],
            [q_len],
            [kv_len],
            kv.block_table,
            layer.scales if fp8 else None,
        )
    except Exception as err:  # FA3 may refuse the strided head subset
        quarter = repr(err)[:200]
    out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
    curves = {}
    kernels = {"portable": KERNELS["portable"]} if fp8 else KERNELS
    for kernel, launch in kernels.items():
        curves[kernel] = curve = []
        for i, density in enumerate(DENSITIES):
            selection = synthetic_selection(plan, density, seed=i)
            attend = partial(
                block_sparse_attention,
                q, kv, plan, selection.kv_index, selection.kv_count, SCALE, out,
                launch=launch, q_scale=layer.q_scale,
            )  # fmt: skip
            ms = bench(attend)
            curve.append(
                dict(
                    density=density,
                    attention_ms=ms,
                    tflops=computed_flops(selection, D, block_size) / ms / 1e9,
                )
            )
            print(label, kernel, json.dumps(curve[-1]), flush=True)
    row = dict(
        shape=label,
        q_len=q_len,
        kv_len=kv_len,
        fa3_ms=dense_ms,
        fa3_quarter_heads_ms=quarter,
        search=searches,
        curves=curves,
    )
    row["crossovers"] = crossovers(row)
    print(json.dumps({k: v for k, v in row.items() if k != "curves"}), flush=True)
    return row


def warm_clocks(seconds: float = 2.0) -> None:
    """Large matrix products for ``seconds``, so that the first shape is not timed while
    the GPU's clocks ramp up from idle."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    start.record()
    while True:
        for _ in range(20):
            a @ a
        end.record()
        end.synchronize()
        if start.elapsed_time(end) > 1000 * seconds:
            return


def crossover(points: list[tuple[float, float]], budget_ms: float) -> float | None:
    """The density at which a time, given as ``(density, ms)`` points by ascending
    density, reaches ``budget_ms`` (linear between the points; None if it is there
    from the first point on, 1 if it never gets there)."""
    if points[0][1] >= budget_ms:
        return None
    for (d0, t0), (d1, t1) in zip(points, points[1:], strict=False):
        if t1 >= budget_ms:
            return d0 + (d1 - d0) * (budget_ms - t0) / (t1 - t0)
    return 1.0


def search_ms_at(searches: dict, density: float, key: str = "ms") -> float:
    """The search's time at a selected ``density``: linear between the measured
    searches' ``(density, time)`` points (the planted inputs' and the diffuse ones'),
    flat beyond them, the slower where they selected the same density; ``key``: "ms"
    (eager) or "gpu_ms" (its GPU time, where measured)."""
    points = sorted((s["density"], s.get(key) or s["ms"]) for s in searches.values())
    (d0, t0), (d1, t1) = points[0], points[-1]
    if d1 - d0 < 1e-6:
        return max(t for _, t in points)
    share = min(max((density - d0) / (d1 - d0), 0.0), 1.0)
    return t0 + share * (t1 - t0)


def crossovers(row: dict) -> dict[str, dict[str, float | None]]:
    """Per kernel of a shape's ``row``: the density where search + attention reaches
    FA3's time with the eager search (``whole_layer``) and with its GPU time
    (``whole_layer_gpu``), and where attention alone does (``per_head``)."""

    def totals(curve: list[dict], key: str | None) -> list[tuple[float, float]]:
        return [
            (p["density"], p["attention_ms"] + (
                search_ms_at(row["search"], p["density"], key) if key else 0.0
            ))
            for p in curve
        ]  # fmt: skip

    return {
        kernel: dict(
            whole_layer=crossover(totals(curve, "ms"), row["fa3_ms"]),
            whole_layer_gpu=crossover(totals(curve, "gpu_ms"), row["fa3_ms"]),
            per_head=crossover(totals(curve, None), row["fa3_ms"]),
        )
        for kernel, curve in row["curves"].items()
    }


def table_row(rows: list[dict]) -> tuple[tuple[float, float], ...]:
    """A run as a row of ``break_even.py``'s table: per range of its ``RANGES``, the
    Hopper and the portable kernel's lowest whole-layer crossover with the eager
    search among the shapes whose keys fall in it, rounded down to 0.05 and never
    above a longer range's (the guard starts a longer length from a shorter one's
    density). A shape whose sparse path never pays counts as 0, a kernel not run as
    1."""
    kernels = ("hopper", "portable")
    lowest = [dict.fromkeys(kernels, 1.0) for _ in RANGES]
    for r in rows:
        in_range = lowest[range_of(r["kv_len"])]
        for kernel, crossing in crossovers(r).items():
            in_range[kernel] = min(in_range[kernel], crossing["whole_layer"] or 0.0)
    row, cap = [], dict.fromkeys(kernels, 1.0)
    for in_range in reversed(lowest):
        for kernel in kernels:
            rounded = math.floor(in_range[kernel] * 20 + 1e-9) / 20
            cap[kernel] = round(min(cap[kernel], rounded), 2)
        row.append((cap["hopper"], cap["portable"]))
    return tuple(reversed(row))


def markdown(rows: list[dict], meta: dict) -> str:
    kernels = list(rows[0]["curves"])
    lines = [
        f"# Break-even against FA3 ({meta['date']}, {meta['gpu']}, git {meta['git']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        *derived_line(meta),
        "Sparse time (search + attention) over FA3 dense, by selected density; "
        "paged-128 K/V, 32 query / 8 KV heads, d 128, "
        f"{meta.get('kv_cache_dtype', 'bf16')}; "
        f"the search's settings: {meta.get('config', 'default')} "
        f"({meta.get('block_size', 128)}-token blocks).",
        "",
        "| shape | FA3 ms | FA3 8/32 heads ms | search ms planted (density) "
        "| search ms diffuse (density) | search GPU ms planted / diffuse |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        quarter = r["fa3_quarter_heads_ms"]
        quarter = f"{quarter:.2f}" if isinstance(quarter, float) else "n/a"
        searches = " | ".join(
            f"{s['ms']:.2f} ({100 * s['density']:.0f}%)" for s in r["search"].values()
        )
        gpu = " / ".join(
            "n/a" if s["gpu_ms"] is None else f"{s['gpu_ms']:.2f}"
            for s in r["search"].values()
        )
        lines.append(
            f"| {r['shape']} | {r['fa3_ms']:.2f} | {quarter} | {searches} | {gpu} |"
        )
    lines += [
        "",
        "Crossovers (selected density where the sparse path's time reaches FA3's): "
        "whole layer with the eager search / with the search's GPU time (the "
        "search's time linear in the density between its two measurements) / per "
        "head (attention alone):",
        "",
        "| shape | " + " | ".join(kernels) + " |",
        "| --- |" + " --- |" * len(kernels),
    ]
    for r in rows:
        cells = " | ".join(
            " / ".join(
                fmt(c[key]) for key in ("whole_layer", "whole_layer_gpu", "per_head")
            )
            for c in crossovers(r).values()
        )
        lines.append(f"| {r['shape']} | {cells} |")
    lines += [
        "",
        "As a row of `break_even.py`'s table (Hopper, portable per range of keys up "
        f"to {RANGES}; a kernel not run reads 1.0): `{table_row(rows)}`",
    ]
    for kernel in kernels:
        lines += ["", f"Attention ms (TF/s) by density, {kernel} kernel:", ""]
        lines.append("| density | " + " | ".join(r["shape"] for r in rows) + " |")
        lines.append("| --- |" + " --- |" * len(rows))
        for i, density in enumerate(DENSITIES):
            points = [r["curves"][kernel][i] for r in rows]
            cells = " | ".join(
                f"{p['attention_ms']:.2f} ({p['tflops']:.0f})" for p in points
            )
            lines.append(f"| {density:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def derived_line(meta: dict) -> list[str]:
    """The markdown lines that say a run's crossovers were derived anew, if so."""
    if "derived" not in meta:
        return []
    derived = meta["derived"]
    return [
        f"Crossovers derived anew from its measurements ({derived['date']}, git "
        f"{derived['git']}): `{derived['command']}`",
        "",
    ]


def fmt(density: float | None) -> str:
    return "never" if density is None else f"{density:.2f}"


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kernel, style in zip(rows[0]["curves"], ("-", "--"), strict=False):
        for n, r in enumerate(rows):
            curve = r["curves"][kernel]
            x = [p["density"] for p in curve]
            y = [
                (search_ms_at(r["search"], p["density"], "gpu_ms") + p["attention_ms"])
                / r["fa3_ms"]
                for p in curve
            ]
            ax.plot(
                x, y, style, marker="o", color=f"C{n}",
                label=f"{r['shape']}, {kernel}",
            )  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("selected density (fraction of causal blocks)")
    ax.set_ylabel("sparse time / FA3 dense time")
    ax.set_title("Search (GPU time) + block-sparse attention against FA3, one layer")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def search_config(spec: str) -> FlexPrefillConfig:
    """The searched configuration of ``--config``'s ``spec``: ``dense_threshold`` 0
    under its settings (every shape searched), ``max_density`` 1 over them (a selection
    above the limit would be rebuilt dense and report density 1: run 48's rerank
    searches at the limits they were measuring)."""
    return config_spec(spec, {"dense_threshold": 0}).with_overrides(
        {"max_density": 1}, "bench_breakeven's search"
    )


def measure(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The run's ``meta`` and its rows, one a shape of :data:`SHAPES`, on the GPU."""
    config = search_config(args.config)
    fp8 = args.kv_cache_dtype == "fp8"
    meta = run_meta(
        page=PAGE,
        densities=DENSITIES,
        kv_cache_dtype="fp8" if fp8 else "bf16",
        config=args.config,
        block_size=config.block_size,
    )
    warm_clocks()
    rows = []
    for shape in SHAPES:
        rows.append(shape_rows(*shape, fp8, config))
        torch.cuda.empty_cache()
    return meta, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "fp8"],
        default="auto",
        help="fp8: queries, keys and values in fp8, against FA3's fp8 pass",
    )
    parser.add_argument(
        "--config",
        default="default",
        help="the search's settings (a preset, a YAML path, key=value,... or JSON) and "
        "the blocks' size; dense_threshold 0 under them",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="a run's breakeven.json: its crossovers, tables and plot derived anew "
        "from its measurements (no GPU; --config and --kv-cache-dtype are the run's)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        run = json.loads(args.from_json.read_text())
        meta, rows = run["meta"], run["rows"]
        meta["derived"] = run_meta(source=str(args.from_json))
        for row in rows:
            row["crossovers"] = crossovers(row)
    else:
        meta, rows = measure(args)
    (args.out / "breakeven.json").write_text(
        json.dumps(dict(meta=meta, rows=rows), indent=1)
    )
    table = markdown(rows, meta)
    (args.out / "breakeven.md").write_text(table)
    plot(rows, args.out / "breakeven.png")
    print(table)


if __name__ == "__main__":
    main()
