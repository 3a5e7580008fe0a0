"""Model coverage: every dummy-weight model config of ``scripts/models`` through
``LLM.generate``, FLEXPREFILL against FLASH_ATTN, each engine in its own process.

Per model and engine: the greedy 16 tokens of four short prompts (1K-4K tokens,
under ``dense_threshold``: FLEXPREFILL must give FLASH_ATTN's tokens); a 64K prompt
(or the longest the model's context takes) with ``VLLM_FLEXPREFILL_STATS`` on, after
one of the same length (the density guard probes an engine's first long chunks),
counting the layer calls that ran sparse (FLEXPREFILL runs the capped settings of
``bench_e2e.py``: dummy weights attend near-uniformly, and the density guard would run
every layer dense at the default preset); the time to first token of a 128K prompt
where the context allows, with statistics off (a second engine, only for models whose
context takes it). Layers the sparse path cannot serve (sliding-window, soft-capped)
run dense with one warning, counted from the log.

The tokens engines hold a fixed 10 GiB KV cache and a 64K context, so ``--parallel N``
runs N of them side by side on one GPU (checks, not timings; 3 fit an H200); the TTFT
engines run one at a time with the whole GPU. ``--tasks`` picks what runs (both by
default).

Usage: python scripts/check_models.py run --out DIR [--models NAME ...]
           [--parallel N] [--tasks tokens ttft]   (writes DIR/check_models.json and .md)
       python scripts/check_models.py worker --model NAME --backend NAME --task TASK
           --out FILE   (tasks: tokens, ttft)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    CAPPED_BUDGET,
    CAPPED_SETTINGS,
    REPO,
    flexprefill_env,
    make_llm,
    random_prompts,
    run_meta,
    sampling,
)

# Importing the package also registers FLEXPREFILL with vLLM.
from vllm_flexprefill import stats

MODELS = REPO / "scripts" / "models"
SHORT_LENGTHS = [1024, 1500, 2500, 4000]
LONG, TTFT_LENGTH = 65536, 131072 - 64
# the tokens engines: context, KV cache and the memory share that lets several run
TOKENS_CONTEXT = LONG + 64
TOKENS_ENGINE = dict(kv_cache_memory_bytes=10 << 30, gpu_memory_utilization=0.25)


def worker(args) -> None:
    """One engine of ``args.backend`` on ``args.model`` runs ``args.task``."""
    model = str(MODELS / args.model)
    if args.task == "tokens":
        context = min(model_context(model), TOKENS_CONTEXT)
        llm = make_llm(args.backend, context, False, model, **TOKENS_ENGINE)
        result = tokens_and_sparse_calls(llm, context)
    else:
        llm = make_llm(args.backend, None, compiled=False, model=model)
        result = time_to_first_token(llm)
    Path(args.out).write_text(json.dumps(result))


def model_context(model: str) -> int:
    """The context vLLM derives for the model's config (rope scaling included)."""
    from vllm.engine.arg_utils import EngineArgs

    engine = EngineArgs(model=model, skip_tokenizer_init=True, load_format="dummy")
    return engine.create_engine_config().model_config.max_model_len


def tokens_and_sparse_calls(llm, max_len: int) -> dict:
    """The short prompts' greedy tokens; the long prompt's layer calls by how they
    ran (with ``$VLLM_FLEXPREFILL_STATS``)."""
    vocab = llm.llm_engine.model_config.get_vocab_size()
    outputs = llm.generate(
        random_prompts(SHORT_LENGTHS, 21, vocab), sampling(16, temperature=0.0)
    )
    long_len = min(LONG, max_len - 16)
    stats_file = os.environ.get(stats.STATS_ENV)
    llm.generate(random_prompts([long_len], 24, vocab), sampling(1))  # guard probes
    start = len(stats.read(stats_file)) if stats_file else 0
    llm.generate(random_prompts([long_len], 22, vocab), sampling(1))
    lines = stats.read(stats_file, start) if stats_file else []
    return dict(
        short_tokens=[list(o.outputs[0].token_ids) for o in outputs],
        long_prompt=long_len,
        calls={
            ran: sum(line["ran"] == ran for line in lines)
            for ran in ("sparse", "dense")
        },
    )


def time_to_first_token(llm) -> dict:
    """Seconds to the first token of one 128K prompt after a warm-up."""
    vocab = llm.llm_engine.model_config.get_vocab_size()
    llm.generate(random_prompts([1024, 20000], 1, vocab), sampling(1))
    prompt = random_prompts([TTFT_LENGTH], 23, vocab)
    t0 = time.perf_counter()
    llm.generate(prompt, sampling(1))
    return dict(ttft_s=time.perf_counter() - t0)


def run_worker(model: str, backend: str, task: str, out: Path) -> tuple[dict, str]:
    """One worker; its JSON result (empty if it failed) and its log."""
    tag = f"{model}_{backend}_{task}"
    flex = backend == "FLEXPREFILL"
    env = flexprefill_env(
        out / "capped.yaml" if flex else None,
        CAPPED_SETTINGS.format(max_budget=CAPPED_BUDGET),
        out / f"stats_{tag}.jsonl" if flex and task == "tokens" else None,
    )
    target = out / f"{tag}.json"
    command = [sys.executable, __file__, "worker", "--model", model]
    command += ["--backend", backend, "--task", task, "--out", str(target)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 1)
    log = done.stdout + done.stderr
    (out / f"{tag}.log").write_text(log)
    print(f"{tag}: exit {done.returncode} after {seconds} s", flush=True)
    result = json.loads(target.read_text()) if target.exists() else {}
    return result | {f"{task}_worker_s": seconds}, log


BACKENDS = ("FLASH_ATTN", "FLEXPREFILL")


def tokens_result(model: str, backend: str, out: Path) -> dict:
    """One tokens engine's result, whether it started, its dense-layer warnings."""
    tokens, log = run_worker(model, backend, "tokens", out)
    return dict(
        tokens, started=bool(tokens), dense_warnings=log.count("FlexPrefill runs ")
    )


def model_row(model: str, results: dict) -> dict:
    """Both engines' results for one model, compared."""
    row = dict(
        model=model, **{backend: results[model, backend] for backend in BACKENDS}
    )
    dense, flex = row["FLASH_ATTN"], row["FLEXPREFILL"]
    row["short_identical"] = bool(flex.get("short_tokens")) and flex.get(
        "short_tokens"
    ) == dense.get("short_tokens")
    return row


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = args.models or sorted(p.parent.name for p in MODELS.glob("*/config.json"))
    pairs = [(model, backend) for model in models for backend in BACKENDS]
    results = {pair: {} for pair in pairs}
    if "tokens" in args.tasks:
        with ThreadPoolExecutor(args.parallel) as pool:
            found = pool.map(lambda pair: tokens_result(*pair, out), pairs)
            results.update(zip(pairs, found, strict=True))
    if "ttft" in args.tasks:
        long_enough = {m: model_context(str(MODELS / m)) > TTFT_LENGTH for m in models}
        for model, backend in pairs:
            if long_enough[model]:
                results[model, backend].update(
                    run_worker(model, backend, "ttft", out)[0]
                )
            else:
                results[model, backend]["ttft_s"] = None
    rows = [model_row(model, results) for model in models]
    for row in rows:
        print(json.dumps(row)[:400], flush=True)
    meta = run_meta(models=models, capped_max_budget=CAPPED_BUDGET)
    (out / "check_models.json").write_text(
        json.dumps(dict(meta=meta, rows=rows), indent=1)
    )
    table = markdown(rows, meta)
    (out / "check_models.md").write_text(table)
    print(table)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Model coverage, dummy weights ({meta['gpu']}, {meta['date']}, "
        f"git {meta['git']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| model | starts | short prompts identical "
        "| long prompt: calls sparse / dense | dense-layer warnings "
        "| 128K TTFT s FLASH_ATTN / FLEXPREFILL ~5% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dense, flex = r["FLASH_ATTN"], r["FLEXPREFILL"]
        calls = flex.get("calls") or {}
        ttft = [dense.get("ttft_s"), flex.get("ttft_s")]
        shown = (
            " / ".join(f"{t:.3f}" for t in ttft)
            if None not in ttft
            else "not measured"
            if "ttft_s" not in dense
            else "context < 128K"
        )
        tokens_ran = "started" in flex
        lines.append(
            f"| {r['model']} | {flex.get('started', '-')} "
            f"| {r['short_identical'] if tokens_ran else '-'} "
            f"| {calls.get('sparse', '-')} / {calls.get('dense', '-')} "
            f"| {flex.get('dense_warnings', '-')} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    run_options = modes.add_parser("run")
    run_options.add_argument("--out", required=True)
    run_options.add_argument("--models", nargs="*")
    run_options.add_argument(
        "--parallel", type=int, default=1, help="tokens engines side by side"
    )
    run_options.add_argument(
        "--tasks", nargs="+", choices=["tokens", "ttft"], default=["tokens", "ttft"]
    )
    worker_options = modes.add_parser("worker")
    worker_options.add_argument("--model", required=True)
    worker_options.add_argument("--backend", required=True)
    worker_options.add_argument("--task", choices=["tokens", "ttft"], required=True)
    worker_options.add_argument("--out", required=True)
    args = parser.parse_args()
    (run if args.mode == "run" else worker)(args)


if __name__ == "__main__":
    main()
