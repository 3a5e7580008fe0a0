"""End-to-end vLLM benchmark: FLEXPREFILL against FLASH_ATTN, same run, same settings.

Model: the Llama-3.1-8B config (``scripts/models/llama-3.1-8b``) with dummy weights,
prompts as random token ids (fresh ones for every measurement, so the prefix cache
never hits). Settings: vLLM's defaults for scheduling (chunked prefill, 16384 tokens
per step on an H200, prefix caching on), ``max_model_len`` 131072, prefill eager and
decode in full CUDA graphs (``compilation_config={"mode": 0, "cudagraph_mode":
"FULL_DECODE_ONLY"}``: the compile step would only add start-up time; the attention
op runs eagerly in either mode).

Dummy weights make attention nearly uniform, so FlexPrefill's budgets hit their caps:
each FLEXPREFILL engine runs with ``tau`` 0 (otherwise every head would look
query-aware and keep ~90% of its blocks) and a ``max_budget`` that holds the density
near 5% or 10% at 128K; the density actually selected is measured through
``VLLM_FLEXPREFILL_STATS`` and reported. The statistics read the selection back after
every layer (a host synchronisation), so the timed engine runs without them and a
second engine of the same settings prefills the same prompts to measure the density.

Measured per engine: time to first token (one request, ``max_tokens=1``) at
8K/32K/64K/128K; decode throughput (64 prompts of 1K tokens, 256 new tokens each).

Usage: python scripts/bench_e2e.py run --out DIR   (writes bench_e2e.json and .md)
       python scripts/bench_e2e.py worker --backend NAME --out FILE [--task density]
           (one engine; reads VLLM_FLEXPREFILL_CONFIG; density: the TTFT prompts'
           selected density, needs VLLM_FLEXPREFILL_STATS)
       python scripts/bench_e2e.py worker --backend FLEXPREFILL --task prefix --out FILE
           (prefix-cache check of tests/test_backend_gpu.py; needs
           VLLM_FLEXPREFILL_STATS)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import COMPILATION_CONFIG, LLAMA_8B_MODEL, random_prompts, run_meta

# Importing the package also registers FLEXPREFILL with vLLM.
from vllm_flexprefill import stats

MAX_MODEL_LEN = 131072
LENGTHS = [8192, 32768, 65536, 131072 - 64]
FLEX_SETTINGS = (
    "gamma: 0.9\ntau: 0.0\nblock_size: 128\nmin_budget: 1024\n"
    "max_budget: {max_budget}\ndense_threshold: 16384\n"
)
ENGINES = [  # name, backend, max_budget (tokens) for FLEXPREFILL
    ("FLASH_ATTN", "FLASH_ATTN", None),
    ("FLEXPREFILL ~5%", "FLEXPREFILL", 1664),
    ("FLEXPREFILL ~10%", "FLEXPREFILL", 3328),
]
# 16 prompts, 1K-64K; the first 8 are under the default dense_threshold.
BATCH_LENGTHS = [1024, 1500, 2200, 3300, 4900, 7200, 10600, 15600]
BATCH_LENGTHS += [16500, 20000, 24000, 30000, 36000, 44000, 53000, 65536]


def make_llm(backend: str):
    from vllm import LLM

    return LLM(
        model=LLAMA_8B_MODEL,
        load_format="dummy",
        skip_tokenizer_init=True,
        attention_backend=backend,
        max_model_len=MAX_MODEL_LEN,
        seed=0,
        compilation_config=COMPILATION_CONFIG,
    )


def sampling(max_tokens: int, **options):
    """vLLM sampling of ``max_tokens`` new token ids, whatever the model emits."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens, ignore_eos=True, detokenize=False, **options
    )


def worker(args) -> None:
    """One engine of ``args.backend`` runs ``args.task`` and writes its JSON result to
    ``args.out``."""
    llm = make_llm(args.backend)
    tasks = {
        "bench": lambda: measure(llm, args.backend, args.lengths),
        "batch": lambda: batch_tokens(llm),
        "prefix": lambda: prefix_cache_check(llm),
        "density": lambda: selected_density(llm, args.lengths),
    }
    Path(args.out).write_text(json.dumps(tasks[args.task]()))


def measure(llm, backend: str, lengths: list[int]) -> dict:
    """The batch's tokens, then (after a warm-up) TTFT per length and decode
    throughput."""
    batch = batch_tokens(llm)
    warm_up = random_prompts([1024, 20000], seed=1)
    llm.generate(warm_up, sampling(1))  # JIT the kernels
    ttft_s = time_to_first_token(llm, backend, lengths)
    decode = decode_tokens_per_s(llm, backend)
    return dict(
        backend=backend, ttft_s=ttft_s, batch_tokens=batch, decode_tokens_per_s=decode
    )


def batch_tokens(llm) -> list[list[int]]:
    """The 16 greedy tokens of each prompt of one batch of 16 mixed-length prompts."""
    prompts = random_prompts(BATCH_LENGTHS, seed=3)
    outputs = llm.generate(prompts, sampling(16, temperature=0.0))
    return [list(o.outputs[0].token_ids) for o in outputs]


def time_to_first_token(llm, backend: str, lengths: list[int]) -> dict[int, float]:
    """Seconds to the first token of one fresh prompt of each length."""
    one, ttft_s = sampling(1), {}
    for i, n in enumerate(lengths):
        prompt = random_prompts([n], seed=100 + i)
        t0 = time.perf_counter()
        llm.generate(prompt, one)
        ttft_s[n] = time.perf_counter() - t0
        print(f"[{backend}] {n} tokens: TTFT {ttft_s[n]:.3f} s", flush=True)
    return ttft_s


def decode_tokens_per_s(llm, backend: str) -> float:
    """Decode throughput: 64 prompts of 1K tokens, 256 new tokens each (after a
    warm-up of 8)."""
    prompts = random_prompts([1024] * 64, seed=7)
    decode = sampling(256)
    llm.generate(prompts[:8], decode)  # warm-up of the decode graphs
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, decode)
    elapsed = time.perf_counter() - t0
    rate = sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed
    print(f"[{backend}] decode {rate:.0f} tokens/s", flush=True)
    return rate


def selected_density(llm, lengths: list[int]) -> dict[int, float | None]:
    """The density FlexPrefill selects on each timed prompt, prefilled again (needs
    ``$VLLM_FLEXPREFILL_STATS``)."""
    stats_file, one, density = os.environ[stats.STATS_ENV], sampling(1), {}
    for i, n in enumerate(lengths):
        start = len(stats.read(stats_file))
        llm.generate(random_prompts([n], seed=100 + i), one)  # the timed prompts
        density[n] = stats.density(stats.read(stats_file, start))
    return density


def prefix_cache_check(llm) -> dict:
    """A 64K prompt, then the same prompt plus 8K new tokens: the second request
    should hit the prefix cache and prefill only its new tokens, attending the cached
    64K (needs ``$VLLM_FLEXPREFILL_STATS``)."""
    stats_file = os.environ[stats.STATS_ENV]
    base, suffix = (p["prompt_token_ids"] for p in random_prompts([65536, 8192], 11))
    params = sampling(4, temperature=0.0)
    llm.generate([{"prompt_token_ids": base}], params)
    start = len(stats.read(stats_file))
    (second,) = llm.generate([{"prompt_token_ids": base + suffix}], params)
    sparse_requests = [line["requests"] for line in stats.read(stats_file, start)]
    return dict(
        cached_tokens=second.num_cached_tokens,
        new_tokens=len(second.outputs[0].token_ids),
        sparse_requests=sparse_requests,
    )


def run(args) -> None:
    """Every engine in its own worker processes; writes bench_e2e.json and
    bench_e2e.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_engine(*engine, args.lengths, out) for engine in ENGINES]
    results = [r for r in results if r is not None]
    meta = run_meta(batch_lengths=BATCH_LENGTHS, lengths=args.lengths)
    compare_batches(results)
    summary = json.dumps(dict(meta=meta, results=results), indent=1)
    (out / "bench_e2e.json").write_text(summary)
    table = markdown(results, meta)
    (out / "bench_e2e.md").write_text(table)
    print(table)


def run_engine(
    name: str, backend: str, max_budget: int | None, lengths: list[int], out: Path
) -> dict | None:
    """One engine's measurements (None if its worker failed), with the density a
    second engine of the same settings selects (the statistics synchronise every
    layer)."""
    env = {k: v for k, v in os.environ.items() if k != stats.STATS_ENV}
    if max_budget is not None:
        config = out / f"flex_{max_budget}.yaml"
        config.write_text(FLEX_SETTINGS.format(max_budget=max_budget))
        env.update(VLLM_FLEXPREFILL_CONFIG=str(config))
    lengths_ = [str(n) for n in lengths]
    worker_ = [sys.executable, __file__, "worker", "--backend", backend]
    worker_ += ["--lengths", *lengths_]
    target = out / f"e2e_{backend}_{max_budget}.json"
    subprocess.run([*worker_, "--out", str(target)], env=env, check=False)
    if not target.exists():
        return None
    density = {}
    if max_budget is not None:
        densities = out / f"density_{max_budget}.json"
        stats_env = {**env, stats.STATS_ENV: str(out / f"stats_{max_budget}.jsonl")}
        task = ["--task", "density", "--out", str(densities)]
        subprocess.run([*worker_, *task], env=stats_env, check=False)
        density = json.loads(densities.read_text()) if densities.exists() else {}
    result = json.loads(target.read_text())
    return dict(result, density=density, name=name, max_budget=max_budget)


def compare_batches(results: list[dict]) -> None:
    """Mark each FLEXPREFILL result: did the batch complete, and do its prompts
    under ``dense_threshold`` decode as with FLASH_ATTN?"""
    dense = next((r for r in results if r["backend"] == "FLASH_ATTN"), None)
    short = [i for i, n in enumerate(BATCH_LENGTHS) if n < 16384]
    for r in results:
        if dense is not None and r is not dense:
            batch, reference = r["batch_tokens"], dense["batch_tokens"]
            identical = all(batch[i] == reference[i] for i in short)
            r["batch_short_prompts_identical"] = identical
            r["batch_completed"] = len(batch) == 16 and all(len(t) == 16 for t in batch)


def markdown(results: list[dict], meta: dict) -> str:
    """bench_e2e.md: TTFT (speedup, density) per engine and length, decode rate, the
    batch checks."""
    dense = next((r for r in results if r["backend"] == "FLASH_ATTN"), None)
    lengths = meta["lengths"]
    title = "# End-to-end TTFT, dummy Llama-3.1-8B on one H200"
    columns = " | ".join(f"{n // 1024}K TTFT s (density)" for n in lengths)
    lines = [
        f"{title} ({meta['date']}, git {meta['git']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"| engine | {columns} | decode tok/s |",
        "| --- | " + " | ".join("---" for _ in lengths) + " | --- |",
    ]
    for r in results:
        cells = " | ".join(ttft_cell(r, n, dense) for n in lengths)
        lines.append(f"| {r['name']} | {cells} | {r['decode_tokens_per_s']:.0f} |")
    lines.append("")
    lines += [batch_line(r) for r in results if "batch_short_prompts_identical" in r]
    return "\n".join(lines) + "\n"


def ttft_cell(r: dict, n: int, dense: dict | None) -> str:
    """TTFT at ``n`` tokens, its speedup over FLASH_ATTN and the selected density."""

    def at(by_length: dict):  # keys are strings once read back from JSON
        return by_length.get(str(n), by_length.get(n))

    t, d = at(r["ttft_s"]), at(r["density"])
    base = at(dense["ttft_s"]) if dense else None
    speed = f" {base / t:.2f}x" if base and r is not dense else ""
    return f"{t:.3f}{speed}" + (f" ({100 * d:.1f}%)" if d is not None else "")


def batch_line(r: dict) -> str:
    return (
        f"- {r['name']}: 16-prompt batch (1K-64K) completed: {r['batch_completed']}; "
        "prompts under 16K token-identical to FLASH_ATTN (greedy): "
        f"{r['batch_short_prompts_identical']}"
    )


def main() -> None:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--out", required=True)
    lengths_help = "prompt lengths timed (TTFT)"
    shared.add_argument(
        "--lengths", type=int, nargs="+", default=LENGTHS, help=lengths_help
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("run", parents=[shared])
    worker_options = modes.add_parser("worker", parents=[shared])
    worker_options.add_argument("--backend", required=True)
    tasks = ["bench", "batch", "prefix", "density"]
    worker_options.add_argument("--task", choices=tasks, default="bench")
    args = parser.parse_args()
    (run if args.mode == "run" else worker)(args)


if __name__ == "__main__":
    main()
