"""End-to-end vLLM benchmark: FLEXPREFILL against FLASH_ATTN, same run, vLLM defaults.

Model: the Llama-3.1-8B config (``scripts/models/llama-3.1-8b``) with dummy weights,
prompts as random token ids (fresh ones for every measurement, so the prefix cache
never hits). Settings: vLLM's defaults (torch.compile, piecewise CUDA graphs for
prefill and mixed batches and full ones for decode, chunked prefill in 16384-token
steps on an H200, prefix caching on), ``max_model_len`` 131072.

Dummy weights make attention nearly uniform, so FlexPrefill's adaptive budgets keep
almost every block. Engines:

* ``FLASH_ATTN``: vLLM's dense backend on its default 16-token KV pages, the baseline
  of every speedup; ``FLASH_ATTN 128-token pages`` the same on the pages FLEXPREFILL
  defaults to (``--block-size 128``);
* ``FLEXPREFILL default``: the default preset as shipped; its selections are above
  ``max_density``, so the density guard should run its layers dense (FlashAttention)
  after the first long prefills probe them: the "never slower" check;
* ``FLEXPREFILL ~5%``: ``tau`` 0 and a ``max_budget`` that holds the density near 5%
  at 128K: the sparse path's speed. Its selected density is measured through
  ``VLLM_FLEXPREFILL_STATS`` by a second engine of the same settings (the statistics
  synchronise every layer, so the timed engine runs without them).

Measured per engine: time to first token (one request, ``max_tokens=1``; median of
three fresh prompts) at 8K/32K/64K/128K after a warm-up (``--lengths`` past 128K, up
to 256K, raise the config's ``max_position_embeddings`` to 262144 through vLLM's
``hf_overrides``, run with that ``max_model_len``, and double the capped engine's
budget to hold ~5%); decode throughput (64
prompts of 1K tokens, 256 new tokens each). ``mixed``: a workload of 256 prompts of
512 to 24K tokens (log-uniform), 128 new tokens each, ``max_model_len`` 32768,
FLASH_ATTN against the default preset.

``--kv-cache-dtype fp8`` runs every engine, FLASH_ATTN included, on vLLM's fp8 KV cache;
``--eager`` runs them with eager prefill and decode-only CUDA graphs (they start in a
third of the time; for comparisons between runs of the same mode).

Usage: python scripts/bench_e2e.py run --out DIR     (writes bench_e2e.json and .md)
           [--engines dense dense128 default capped] [--lengths N ...]
           [--kv-cache-dtype fp8]
           [--eager]
       python scripts/bench_e2e.py mixed --out DIR   (writes bench_mixed.json and .md)
       python scripts/bench_e2e.py worker --backend NAME --task TASK --out FILE
           [--block-size N] [--tensor-parallel-size N]
           (one engine; reads VLLM_FLEXPREFILL_CONFIG; tasks: bench, mixed, density
           (needs VLLM_FLEXPREFILL_STATS), and for tests/test_backend_gpu.py batch,
           prefix, guard and settings (all but batch need VLLM_FLEXPREFILL_STATS;
           settings runs with the request-settings hook); the test tasks run eager
           with decode-only CUDA graphs, which starts faster)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
    CAPPED_BUDGET,
    CAPPED_SETTINGS,
    flexprefill_env,
    length_label,
    make_llm,
    random_prompts,
    run_meta,
    sampling,
)

# Importing the package also registers FLEXPREFILL with vLLM.
from vllm_flexprefill import request_settings, stats
from vllm_flexprefill.config import ConfigError, as_config

MAX_MODEL_LEN = 131072
LENGTHS = [8192, 32768, 65536, 131072 - 64]
# prompts past 128K: the same config with its context raised (vLLM's hf_overrides)
LONG_MAX_MODEL_LEN = 262144
LONG_CONTEXT = dict(hf_overrides={"max_position_embeddings": LONG_MAX_MODEL_LEN})
REPEATS = 3  # fresh prompts per length; TTFT is their median
ENGINES = {  # key: name, backend, capped (else the default preset), KV page tokens
    "dense": ("FLASH_ATTN", "FLASH_ATTN", False, None),
    "dense128": ("FLASH_ATTN 128-token pages", "FLASH_ATTN", False, 128),
    "default": ("FLEXPREFILL default", "FLEXPREFILL", False, None),
    "capped": ("FLEXPREFILL ~5%", "FLEXPREFILL", True, None),
}
BASELINE = ENGINES["dense"][0]  # the engine every speedup divides
# The mixed workload.
MIXED_MAX_MODEL_LEN = 32768
MIXED_PROMPTS, MIXED_SHORTEST, MIXED_LONGEST, MIXED_NEW_TOKENS = 256, 512, 24576, 128
# tests/test_backend_gpu.py's per-request settings: prompt length -> its entry
SETTINGS_ASKED = {20000: None, 20100: {"gamma": 0.95, "tau": 0.0}, 20200: "dense"}
# tests/test_backend_gpu.py's batch: 16 prompts, 1K-64K; the first 8 are under the
# default dense_threshold.
BATCH_LENGTHS = [1024, 1500, 2200, 3300, 4900, 7200, 10600, 15600]
BATCH_LENGTHS += [16500, 20000, 24000, 30000, 36000, 44000, 53000, 65536]


def worker(args) -> None:
    """One engine of ``args.backend`` runs ``args.task`` and writes its JSON result to
    ``args.out``."""
    mixed = args.task == "mixed"
    compiled = args.task in ("bench", "mixed") and not args.eager
    hook = (
        dict(logits_processors=[request_settings.HOOK])
        if args.task == "settings"
        else {}
    )
    max_model_len, context = engine_context(args.lengths)
    pages = dict(block_size=args.block_size) if args.block_size else {}
    llm = make_llm(
        args.backend,
        MIXED_MAX_MODEL_LEN if mixed else max_model_len,
        compiled,
        kv_cache_dtype=args.kv_cache_dtype,
        tensor_parallel_size=args.tensor_parallel_size,
        **context,
        **pages,
        **hook,
    )
    tasks = {
        "bench": lambda: measure(llm, args.backend, args.lengths),
        "mixed": lambda: mixed_workload(llm, args.backend),
        "batch": lambda: batch_tokens(llm),
        "prefix": lambda: prefix_cache_check(llm),
        "guard": lambda: guard_check(llm),
        "settings": lambda: request_settings_check(llm),
        "density": lambda: selected_density(llm, args.lengths),
    }
    Path(args.out).write_text(json.dumps(tasks[args.task]()))


def engine_context(lengths: list[int]) -> tuple[int, dict]:
    """The ``max_model_len`` that takes every prompt of ``lengths`` (and one new
    token), and the engine arguments that context needs."""
    if max(lengths) < MAX_MODEL_LEN:
        return MAX_MODEL_LEN, {}
    if max(lengths) < LONG_MAX_MODEL_LEN:
        return LONG_MAX_MODEL_LEN, LONG_CONTEXT
    raise SystemExit(f"--lengths: at most {LONG_MAX_MODEL_LEN - 1} tokens")


def capped_budget(lengths: list[int]) -> int:
    """The capped engine's ``max_budget`` in tokens: ~5% density at the longest
    prompt, in steps of 128K tokens (the budget's share of a row halves as the
    prompt doubles): a 131072-token prompt, which needs the longer context, keeps
    128K's budget."""
    return CAPPED_BUDGET * -(-max(lengths) // MAX_MODEL_LEN)


def warm_up(llm) -> None:
    """A short and a long prompt: CUDA graphs and kernels warm; with FLEXPREFILL the
    long one's two chunks let the density guard measure every layer."""
    llm.generate(random_prompts([1024, 20000], seed=1), sampling(1))


def measure(llm, backend: str, lengths: list[int]) -> dict:
    """After a warm-up: TTFT per length and decode throughput."""
    warm_up(llm)
    ttft_s = time_to_first_token(llm, backend, lengths)
    decode = decode_tokens_per_s(llm, backend)
    return dict(backend=backend, ttft_s=ttft_s, decode_tokens_per_s=decode)


def batch_tokens(llm) -> list[list[int]]:
    """The 16 greedy tokens of each prompt of one batch of 16 mixed-length prompts."""
    prompts = random_prompts(BATCH_LENGTHS, seed=3)
    outputs = llm.generate(prompts, sampling(16, temperature=0.0))
    return [list(o.outputs[0].token_ids) for o in outputs]


def timed_prompts(n: int, i: int) -> list[dict]:
    """The ``REPEATS`` fresh prompts timed at length ``n`` (the ``i``-th length)."""
    return random_prompts([n] * REPEATS, seed=100 + i)


def time_to_first_token(llm, backend: str, lengths: list[int]) -> dict[int, float]:
    """Median seconds to the first token of ``REPEATS`` fresh prompts of each length,
    one at a time."""
    one, ttft_s = sampling(1), {}
    for i, n in enumerate(lengths):
        times = []
        for prompt in timed_prompts(n, i):
            t0 = time.perf_counter()
            llm.generate([prompt], one)
            times.append(time.perf_counter() - t0)
        ttft_s[n] = statistics.median(times)
        shown = ", ".join(f"{t:.3f}" for t in times)
        print(f"[{backend}] {n} tokens: TTFT {ttft_s[n]:.3f} s ({shown})", flush=True)
    return ttft_s


def mixed_workload(llm, backend: str) -> dict:
    """Seconds for the mixed workload in one ``generate`` (after a warm-up), and the
    tokens it produced."""
    gen = random.Random(5)
    span = math.log(MIXED_LONGEST / MIXED_SHORTEST)
    lengths = [
        round(MIXED_SHORTEST * math.exp(gen.random() * span))
        for _ in range(MIXED_PROMPTS)
    ]
    prompts = random_prompts(lengths, seed=6)
    warm_up(llm)
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, sampling(MIXED_NEW_TOKENS))
    elapsed = time.perf_counter() - t0
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"[{backend}] mixed workload: {elapsed:.2f} s", flush=True)
    return dict(
        backend=backend,
        seconds=elapsed,
        prompt_tokens=sum(lengths),
        generated_tokens=generated,
        lengths=lengths,
    )


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


def selected_density(llm, lengths: list[int]) -> dict[int, dict]:
    """What FlexPrefill selected and computed on the timed prompts, prefilled again
    after the same warm-up (needs ``$VLLM_FLEXPREFILL_STATS``): per length, the
    selected density of the calls that searched and the computed density (dense
    calls count every block)."""
    stats_file, one, density = os.environ[stats.STATS_ENV], sampling(1), {}
    warm_up(llm)
    for i, n in enumerate(lengths):
        start = len(stats.read(stats_file))
        for prompt in timed_prompts(n, i):
            llm.generate([prompt], one)
        lines = stats.read(stats_file, start)
        density[n] = dict(
            selected=stats.density(lines), computed=stats.computed_density(lines)
        )
    return density


def guard_check(llm) -> list[list[dict]]:
    """Three fresh 40K prompts one after another; per prompt, each layer call's
    ``ran`` and ``reason`` from ``$VLLM_FLEXPREFILL_STATS``."""
    stats_file, calls = os.environ[stats.STATS_ENV], []
    for i in range(3):
        start = len(stats.read(stats_file))
        llm.generate(random_prompts([40000], seed=200 + i), sampling(1))
        lines = stats.read(stats_file, start)
        keys = ("layer", "ran", "reason")
        calls.append([{k: line[k] for k in keys} for line in lines])
    return calls


def request_settings_check(llm) -> dict:
    """Three prompts of about 20K tokens in one ``generate``: one without a
    ``flexprefill`` entry, one with other settings, one ``"dense"``; then a bad entry.
    Per prompt length, the settings its last chunk ran with (from
    ``$VLLM_FLEXPREFILL_STATS``; a chunk's key count is the prompt length), and the
    bad entry's error."""
    stats_file = os.environ[stats.STATS_ENV]
    prompts = random_prompts(list(SETTINGS_ASKED), seed=300)
    params = [
        sampling(1, extra_args=None if entry is None else {"flexprefill": entry})
        for entry in SETTINGS_ASKED.values()
    ]
    llm.generate(prompts, params)
    try:
        llm.generate(prompts[:1], sampling(1, extra_args={"flexprefill": {"gamma": 2}}))
        error = None
    except ValueError as err:
        error = str(err)
    settings = {
        kv: ran
        for line in stats.read(stats_file)
        for (_, kv), ran in zip(line["requests"], line["settings"], strict=True)
    }
    return dict(settings=settings, error=error)


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
    lines = stats.read(stats_file, start)
    return dict(
        cached_tokens=second.num_cached_tokens,
        new_tokens=len(second.outputs[0].token_ids),
        sparse_requests=[line["requests"] for line in lines if line["ran"] == "sparse"],
    )


def run(args) -> None:
    """Every engine in its own worker processes; writes bench_e2e.json and
    bench_e2e.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    density = not args.no_density
    ran = {key: run_engine(*ENGINES[key], args, out, density) for key in args.engines}
    results = [r for r in ran.values() if r is not None]
    meta = run_meta(
        lengths=args.lengths,
        repeats=REPEATS,
        kv_cache_dtype=args.kv_cache_dtype,
        eager=args.eager,
        failed=[ENGINES[key][0] for key, r in ran.items() if r is None],
    )
    summary = json.dumps(dict(meta=meta, results=results), indent=1)
    (out / "bench_e2e.json").write_text(summary)
    table = markdown(results, meta)
    (out / "bench_e2e.md").write_text(table)
    print(table)


def engine_env(
    max_budget: int | None, out: Path, max_density: float | str | None = None
) -> dict:
    """The worker's environment: no statistics; the capped engine's config file (its
    ``max_density`` the config's default unless given)."""
    if max_budget is None:
        return flexprefill_env()
    settings = CAPPED_SETTINGS.format(max_budget=max_budget)
    if max_density is not None:
        settings += f"max_density: {max_density}\n"
    name = f"flex_{max_budget}_{max_density or 'default'}.yaml"
    return flexprefill_env(out / name, settings)


def run_worker(
    backend: str,
    task: str,
    target: Path,
    env: dict,
    lengths=(),
    kv_cache_dtype: str = "auto",
    eager: bool = False,
    block_size: int | None = None,
) -> dict:
    """One worker process; its JSON result (empty if it wrote none: it failed). An
    earlier run's result at ``target`` is removed first. ``block_size``: the KV
    pages' tokens (None: the backend's default)."""
    command = [sys.executable, __file__, "worker", "--backend", backend]
    command += ["--task", task, "--out", str(target)]
    command += ["--kv-cache-dtype", kv_cache_dtype] + (["--eager"] if eager else [])
    command += ["--lengths", *map(str, lengths)] if lengths else []
    command += ["--block-size", str(block_size)] if block_size else []
    target.unlink(missing_ok=True)
    # vLLM's shutdown may exit non-zero after the result is written: the file decides
    code = subprocess.run(command, env=env, check=False).returncode
    if not target.exists():
        print(f"{backend} {task} worker failed (exit code {code})", file=sys.stderr)
        return {}
    return json.loads(target.read_text())


def run_engine(
    name: str,
    backend: str,
    capped: bool,
    block_size: int | None,
    args,
    out: Path,
    measure_density: bool,
) -> dict | None:
    """One engine's measurements (None if its worker failed); for the capped engine
    also the density a second engine of the same settings selects (the statistics
    synchronise every layer). ``block_size``: its KV pages' tokens (None: the
    backend's default)."""
    max_budget = (args.capped_budget or capped_budget(args.lengths)) if capped else None
    max_density = args.capped_max_density if capped else None
    env = engine_env(max_budget, out, max_density)
    tag = f"{backend}_{max_budget or 'default'}_{args.kv_cache_dtype}"
    if max_density is not None:
        tag += f"_density{max_density}"
    if block_size:
        tag += f"_pages{block_size}"
    engine = (args.lengths, args.kv_cache_dtype, args.eager, block_size)
    result = run_worker(backend, "bench", out / f"e2e_{tag}.json", env, *engine)
    if not result:
        return None
    density = {}
    if max_budget is not None and measure_density:
        stats_env = {**env, stats.STATS_ENV: str(out / f"stats_{tag}.jsonl")}
        target = out / f"density_{tag}.json"
        density = run_worker(backend, "density", target, stats_env, *engine)
    if max_budget is not None:
        if args.capped_budget:
            name = name.replace("~5%", "capped")
        name += f" (max_budget {max_budget}"
        name += ")" if max_density is None else f", max_density {max_density})"
    return dict(result, density=density, name=name, max_budget=max_budget)


def mixed(args) -> None:
    """The mixed workload on FLASH_ATTN and on the default preset; writes
    bench_mixed.json and bench_mixed.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for backend in ("FLASH_ATTN", "FLEXPREFILL"):
        target = out / f"mixed_{backend}.json"
        results[backend] = run_worker(backend, "mixed", target, engine_env(None, out))
    meta = run_meta(
        prompts=MIXED_PROMPTS,
        lengths=[MIXED_SHORTEST, MIXED_LONGEST],
        new_tokens=MIXED_NEW_TOKENS,
        max_model_len=MIXED_MAX_MODEL_LEN,
    )
    (out / "bench_mixed.json").write_text(
        json.dumps(dict(meta=meta, results=results), indent=1)
    )
    dense, flex = (results[b].get("seconds") for b in ("FLASH_ATTN", "FLEXPREFILL"))
    ratio = f"{flex / dense:.3f}" if dense and flex else "n/a"
    table = (
        f"# Mixed workload, dummy Llama-3.1-8B on one {meta['gpu']} ({meta['date']}, "
        f"git {meta['git']})\n\nCommand: `{meta['command']}`\n\n"
        f"{MIXED_PROMPTS} prompts of {MIXED_SHORTEST}-{MIXED_LONGEST} tokens "
        f"(log-uniform), {MIXED_NEW_TOKENS} new tokens each, max_model_len "
        f"{MIXED_MAX_MODEL_LEN}, one generate call, vLLM defaults.\n\n"
        "| engine | seconds | / FLASH_ATTN |\n| --- | --- | --- |\n"
        f"| FLASH_ATTN | {dense} | 1 |\n| FLEXPREFILL default | {flex} | {ratio} |\n"
    )
    (out / "bench_mixed.md").write_text(table)
    print(table)


def markdown(results: list[dict], meta: dict) -> str:
    """bench_e2e.md: TTFT (speedup, density) per engine and length, decode rate."""
    dense = next((r for r in results if r["name"] == BASELINE), None)
    lengths = meta["lengths"]
    title = f"# End-to-end TTFT, dummy Llama-3.1-8B on one {meta['gpu']}"
    columns = " | ".join(f"{length_label(n)} TTFT s" for n in lengths)
    lines = [
        f"{title} ({meta['date']}, git {meta['git']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"KV cache: {meta['kv_cache_dtype']}"
        + (", eager prefill" if meta.get("eager") else ", vLLM defaults")
        + f". Median of {meta['repeats']} fresh "
        "prompts per length; speedup over FLASH_ATTN; (selected / computed density) "
        "where measured.",
        "",
        f"| engine | {columns} | decode tok/s |",
        "| --- | " + " | ".join("---" for _ in lengths) + " | --- |",
    ]
    for r in results:
        cells = " | ".join(ttft_cell(r, n, dense) for n in lengths)
        decode = r["decode_tokens_per_s"]
        base = f" ({decode / dense['decode_tokens_per_s']:.3f}x)" if dense else ""
        lines.append(f"| {r['name']} | {cells} | {decode:.0f}{base} |")
    for name in meta.get("failed", []):
        failed = " | ".join("failed" for _ in lengths)
        lines.append(f"| {name} | {failed} | failed (its worker wrote no result) |")
    return "\n".join(lines) + "\n"


def ttft_cell(r: dict, n: int, dense: dict | None) -> str:
    """TTFT at ``n`` tokens, its speedup over FLASH_ATTN and the densities."""

    def at(by_length: dict):  # keys are strings once read back from JSON
        return by_length.get(str(n), by_length.get(n))

    t, d = at(r["ttft_s"]), at(r.get("density") or {})
    base = at(dense["ttft_s"]) if dense else None
    speed = f" {base / t:.2f}x" if base and r is not dense else ""
    shown = ""
    if d and d.get("selected") is not None:
        shown = f" ({100 * d['selected']:.1f}% / {100 * d['computed']:.1f}%)"
    return f"{t:.3f}{speed}{shown}"


def positive_tokens(text: str) -> int:
    """A number of tokens (``--capped-budget``, ``--block-size``): a whole number
    >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of tokens >= 1")
    return int(text)


def density_setting(text: str) -> float | str:
    """A ``--capped-max-density``: what the config's ``max_density`` takes."""
    try:
        value = float(text)
    except ValueError:
        value = text  # "auto", or refused below
    try:
        return as_config({"max_density": value}).max_density
    except ConfigError as error:
        problem = str(error).splitlines()[-1].strip().removeprefix("- ")
        raise argparse.ArgumentTypeError(problem) from None


def main() -> None:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--out", required=True)
    lengths_help = "prompt lengths timed (TTFT)"
    shared.add_argument(
        "--lengths", type=int, nargs="+", default=LENGTHS, help=lengths_help
    )
    shared.add_argument(
        "--kv-cache-dtype", default="auto", help="vLLM's, for every engine (fp8)"
    )
    shared.add_argument(
        "--eager",
        action="store_true",
        help="timed engines: eager prefill, decode-only CUDA graphs",
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    run_options = modes.add_parser("run", parents=[shared])
    run_options.add_argument(
        "--no-density",
        action="store_true",
        help="skip the capped engine's density measurement (a second engine)",
    )
    run_options.add_argument(
        "--engines",
        nargs="+",
        choices=list(ENGINES),
        default=list(ENGINES),
        help="FLASH_ATTN (dense; dense128: on 128-token KV pages), the default preset, "
        "the ~5%% capped preset",
    )
    run_options.add_argument(
        "--capped-budget",
        type=positive_tokens,
        help="the capped engine's max_budget in tokens (default: ~5%% density at the "
        "longest prompt): a controlled density, e.g. to time the guard's break-even",
    )
    run_options.add_argument(
        "--capped-max-density",
        type=density_setting,
        help="the capped engine's max_density (default: the config's, auto; 1: sparse "
        "at any density)",
    )
    # the mixed workload runs vLLM's defaults at its own lengths: no other option
    mixed_options = modes.add_parser("mixed")
    mixed_options.add_argument("--out", required=True)
    worker_options = modes.add_parser("worker", parents=[shared])
    worker_options.add_argument("--backend", required=True)
    tasks = ["bench", "mixed", "batch", "prefix", "guard", "density", "settings"]
    worker_options.add_argument("--task", choices=tasks, default="bench")
    worker_options.add_argument(
        "--block-size", type=positive_tokens, help="KV page tokens (vLLM's)"
    )
    worker_options.add_argument(
        "--tensor-parallel-size",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="GPUs the engine splits the heads over (vLLM's)",
    )
    args = parser.parse_args()
    {"run": run, "mixed": mixed, "worker": worker}[args.mode](args)


if __name__ == "__main__":
    main()
