"""Run 28's Pareto plot (CPU lab, SmolLM2-135M-Instruct float32): perplexity cost and top-1
agreement against density for the paper's selection (its γ and min_budget sweeps, the
2026-12-02 lab), the landed `selection: vsgrid` (run 26's fitted weight, runs 26-28) and
vsgrid re-ranked by 16 sampled queries on twice its blocks (`refine.py`, run 28).
Usage: python pareto28.py OUT.png (reads the runs' results.jsonl files; prints the points)."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parents[2]
SOURCES = {
    "2026-12-02-selection-cpu/results.jsonl": {"paper": lambda s: s.startswith("paper:")},
    "2026-12-04-run26/fidelity/results.jsonl": {
        "vsgrid (landed)": lambda s: s.startswith("xval:")
        and "floor=0.333" in s
        and "weights=16" in s
        and "segments" not in s
    },
    "2026-12-05-run27/fidelity/results.jsonl": {
        "vsgrid (landed)": lambda s: s.startswith("vsgrid:")
        or (s.startswith("xval:") and "weights=16" in s)
    },
    "2026-12-05-run28/fidelity/results.jsonl": {
        "vsgrid (landed)": lambda s: s.startswith("landed:"),
        "vsgrid + 16-query re-rank": lambda s: s.startswith("refine:")
        and "queries=16,widen=2" in s
        and not any(x in s for x in ("key_parts", "sure", "widen=2,", "whole_row")),
    },
}
CELLS = [("code", 4096), ("prose", 4096), ("code", 8192), ("prose", 8192)]
STYLE = {"paper": "o", "vsgrid (landed)": "s-", "vsgrid + 16-query re-rank": "^-"}


def points():
    found = {}
    for name, series in SOURCES.items():
        for line in (RESULTS / name).read_text().splitlines():
            r = json.loads(line)
            for label, match in series.items():
                if match(r["spec"]):
                    key = (r["text"], r["tokens"], label)
                    found.setdefault(key, {})[r["density"]] = (r["ppl_change"], r["top1"], r["spec"])
    return found


def main(out):
    found = points()
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for col, (text, tokens) in enumerate(CELLS):
        for label, style in STYLE.items():
            rows = sorted(found.get((text, tokens, label), {}).items())
            for d, (c, t, spec) in rows:
                print(f"{text} {tokens} {label}: {spec} density {d} cost {c:+.2f}% top-1 {t}%")
            if rows:
                d = [r[0] for r in rows]
                axes[0, col].plot(d, [r[1][0] for r in rows], style, label=label)
                axes[1, col].plot(d, [r[1][1] for r in rows], style, label=label)
        axes[0, col].set_title(f"{text} {tokens // 1024}K")
        axes[0, col].set_ylabel("perplexity cost (%)")
        axes[1, col].set_ylabel("top-1 agreement (%)")
        axes[1, col].axhline(95, color="grey", lw=0.5)
        for ax in axes[:, col]:
            ax.set_xlabel("density")
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1])
