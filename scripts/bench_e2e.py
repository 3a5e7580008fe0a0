"""End-to-end vLLM benchmark: FLEXPREFILL against FLASH_ATTN, same run, same settings.

Model: the Llama-3.1-8B config (``scripts/models/llama-3.1-8b``) with dummy weights, prompts
as random token ids (fresh ones for every measurement, so the prefix cache never hits).
Settings: vLLM's defaults for scheduling (chunked prefill, 16384 tokens per step on an
H200, prefix caching on), ``max_model_len`` 131072, prefill eager and decode in full CUDA
graphs (``compilation_config={"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}``: the
compile step would only add start-up time; the attention op runs eagerly in either mode).

Dummy weights make attention nearly uniform, so FlexPrefill's budgets hit their caps:
each FLEXPREFILL engine runs with ``tau`` 0 (otherwise every head would look
query-aware and keep ~90% of its blocks) and a ``max_budget`` that holds the density
near 5% or 10% at 128K; the density actually selected is measured through
``VLLM_FLEXPREFILL_STATS`` and reported. The statistics read the selection back after every
layer (a host synchronisation), so the timed engine runs without them and a second engine
of the same settings prefills the same prompts to measure the density.

Measured per engine: time to first token (one request, ``max_tokens=1``) at
8K/32K/64K/128K; decode throughput (64 prompts of 1K tokens, 256 new tokens each).

Usage: python scripts/bench_e2e.py run --out DIR   (writes bench_e2e.json and .md)
       python scripts/bench_e2e.py worker --backend NAME --out FILE [--task density]   (one engine; reads
       VLLM_FLEXPREFILL_CONFIG; density: the TTFT prompts' selected density, needs VLLM_FLEXPREFILL_STATS)
       python scripts/bench_e2e.py worker --backend FLEXPREFILL --task prefix --out FILE   (prefix-cache
       check of tests/test_backend_gpu.py; needs VLLM_FLEXPREFILL_STATS)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "scripts" / "models" / "llama-3.1-8b")
MAX_MODEL_LEN = 131072
LENGTHS = [8192, 32768, 65536, 131072 - 64]
FLEX_SETTINGS = "gamma: 0.9\ntau: 0.0\nblock_size: 128\nmin_budget: 1024\nmax_budget: {max_budget}\ndense_threshold: 16384\n"
ENGINES = [  # name, backend, max_budget (tokens) for FLEXPREFILL
    ("FLASH_ATTN", "FLASH_ATTN", None),
    ("FLEXPREFILL ~5%", "FLEXPREFILL", 1664),
    ("FLEXPREFILL ~10%", "FLEXPREFILL", 3328),
]


def make_llm(backend: str):
    from vllm import LLM

    return LLM(model=MODEL, load_format="dummy", skip_tokenizer_init=True, attention_backend=backend,
               max_model_len=MAX_MODEL_LEN, seed=0,
               compilation_config={"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})


def random_prompts(lengths, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [{"prompt_token_ids": torch.randint(1000, 120000, (n,), generator=gen).tolist()} for n in lengths]


def density_since(stats_file: Path, start: int) -> float | None:
    if not stats_file.exists():
        return None
    lines = [json.loads(x) for x in stats_file.read_text().splitlines()[start:]]
    causal = sum(x["causal_blocks"] for x in lines)
    return sum(x["selected_blocks"] for x in lines) / causal if causal else None


BATCH_LENGTHS = [1024, 1500, 2200, 3300, 4900, 7200, 10600, 15600, 16500, 20000, 24000, 30000, 36000, 44000,
                 53000, 65536]  # 16 prompts, 1K-64K; the first 8 are under the default dense_threshold


def prefix_cache_check(llm, out: Path) -> None:
    """A 64K prompt, then the same prompt plus 8K new tokens: the second request should hit
    the prefix cache and prefill only its new tokens, attending the cached 64K."""
    from vllm import SamplingParams

    base, suffix = (p["prompt_token_ids"] for p in random_prompts([65536, 8192], seed=11))
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate([{"prompt_token_ids": base}], params)
    stats_file = Path(os.environ["VLLM_FLEXPREFILL_STATS"])
    start = len(stats_file.read_text().splitlines()) if stats_file.exists() else 0
    (second,) = llm.generate([{"prompt_token_ids": base + suffix}], params)
    requests = [json.loads(line)["requests"] for line in stats_file.read_text().splitlines()[start:]]
    out.write_text(json.dumps(dict(cached_tokens=second.num_cached_tokens, new_tokens=len(second.outputs[0].token_ids),
                                   sparse_requests=requests)))


def worker(args) -> None:
    import vllm_flexprefill  # noqa: F401  (registers FLEXPREFILL in this process)
    from vllm import SamplingParams

    llm = make_llm(args.backend)
    if args.task == "prefix":
        prefix_cache_check(llm, Path(args.out))
        return
    one = SamplingParams(max_tokens=1, ignore_eos=True, detokenize=False)
    if args.task == "density":
        stats_file = Path(os.environ["VLLM_FLEXPREFILL_STATS"])
        density = {}
        for i, n in enumerate(args.lengths):
            start = len(stats_file.read_text().splitlines()) if stats_file.exists() else 0
            llm.generate(random_prompts([n], seed=100 + i), one)  # the timed prompts, again
            density[n] = density_since(stats_file, start)
        Path(args.out).write_text(json.dumps(density))
        return
    # One batch of 16 mixed-length prompts, greedy.
    outputs = llm.generate(random_prompts(BATCH_LENGTHS, seed=3), SamplingParams(
        max_tokens=16, temperature=0.0, ignore_eos=True, detokenize=False))
    batch = [list(o.outputs[0].token_ids) for o in outputs]
    if args.task == "batch":
        Path(args.out).write_text(json.dumps(batch))
        return
    llm.generate(random_prompts([1024, 20000], seed=1), one)  # warm-up: JIT the kernels
    result = {"backend": args.backend, "ttft_s": {}, "batch_tokens": batch}
    for i, n in enumerate(args.lengths):
        prompt = random_prompts([n], seed=100 + i)
        t0 = time.perf_counter()
        llm.generate(prompt, one)
        result["ttft_s"][n] = time.perf_counter() - t0
        print(f"[{args.backend}] {n} tokens: TTFT {result['ttft_s'][n]:.3f} s", flush=True)
    prompts = random_prompts([1024] * 64, seed=7)
    decode = SamplingParams(max_tokens=256, ignore_eos=True, detokenize=False)
    llm.generate(prompts[:8], decode)  # warm-up of the decode graphs
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, decode)
    elapsed = time.perf_counter() - t0
    result["decode_tokens_per_s"] = sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed
    print(f"[{args.backend}] decode {result['decode_tokens_per_s']:.0f} tokens/s", flush=True)
    Path(args.out).write_text(json.dumps(result))


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, backend, max_budget in ENGINES:
        env = {k: v for k, v in os.environ.items() if k != "VLLM_FLEXPREFILL_STATS"}
        if max_budget is not None:
            config = out / f"flex_{max_budget}.yaml"
            config.write_text(FLEX_SETTINGS.format(max_budget=max_budget))
            env.update(VLLM_FLEXPREFILL_CONFIG=str(config))
        worker_ = [sys.executable, __file__, "worker", "--backend", backend, "--lengths", *map(str, args.lengths)]
        target = out / f"e2e_{backend}_{max_budget}.json"
        subprocess.run(worker_ + ["--out", str(target)], env=env, check=False)
        if not target.exists():
            continue
        density = {}
        if max_budget is not None:  # in a second engine: the statistics synchronise every layer
            densities = out / f"density_{max_budget}.json"
            subprocess.run(worker_ + ["--task", "density", "--out", str(densities)], check=False,
                           env=dict(env, VLLM_FLEXPREFILL_STATS=str(out / f"stats_{max_budget}.jsonl")))
            density = json.loads(densities.read_text()) if densities.exists() else {}
        results.append(dict(json.loads(target.read_text()), density=density, name=name, max_budget=max_budget))
    meta = dict(date=time.strftime("%Y-%m-%d"), git=os.environ.get("GIT_REV", "unknown"),
                command="python " + " ".join(sys.argv), batch_lengths=BATCH_LENGTHS, lengths=args.lengths)
    dense = next((r for r in results if r["backend"] == "FLASH_ATTN"), None)
    for r in results:  # the batch prompts under dense_threshold must decode as with FLASH_ATTN
        if dense is not None and r is not dense:
            short = [i for i, n in enumerate(BATCH_LENGTHS) if n < 16384]
            r["batch_short_prompts_identical"] = all(r["batch_tokens"][i] == dense["batch_tokens"][i] for i in short)
            r["batch_completed"] = len(r["batch_tokens"]) == 16 and all(len(t) == 16 for t in r["batch_tokens"])
    (out / "bench_e2e.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    table = markdown(results, meta)
    (out / "bench_e2e.md").write_text(table)
    print(table)


def markdown(results, meta) -> str:
    dense = next((r for r in results if r["backend"] == "FLASH_ATTN"), None)
    lengths = meta["lengths"]
    lines = [f"# End-to-end TTFT, dummy Llama-3.1-8B on one H200 ({meta['date']}, git {meta['git']})", "",
             f"Command: `{meta['command']}`", "",
             "| engine | " + " | ".join(f"{n // 1024}K TTFT s (density)" for n in lengths) + " | decode tok/s |",
             "| --- | " + " | ".join("---" for _ in lengths) + " | --- |"]
    for r in results:
        cells = []
        for n in lengths:
            t = r["ttft_s"].get(str(n), r["ttft_s"].get(n))
            d = r["density"].get(str(n), r["density"].get(n))
            base = dense["ttft_s"].get(str(n), dense["ttft_s"].get(n)) if dense else None
            speed = f" {base / t:.2f}x" if base and r is not dense else ""
            cells.append(f"{t:.3f}{speed}" + (f" ({100 * d:.1f}%)" if d is not None else ""))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['decode_tokens_per_s']:.0f} |")
    lines.append("")
    for r in results:
        if "batch_short_prompts_identical" in r:
            lines.append(f"- {r['name']}: 16-prompt batch (1K-64K) completed: {r['batch_completed']}; prompts "
                         f"under 16K token-identical to FLASH_ATTN (greedy): {r['batch_short_prompts_identical']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="prompt lengths timed (TTFT)")
    w = sub.add_parser("worker")
    w.add_argument("--backend", required=True)
    w.add_argument("--task", choices=["bench", "batch", "prefix", "density"], default="bench")
    w.add_argument("--out", required=True)
    w.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    args = parser.parse_args()
    (run if args.mode == "run" else worker)(args)


if __name__ == "__main__":
    main()
