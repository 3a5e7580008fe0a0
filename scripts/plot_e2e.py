"""Plot time-to-first-token against prompt length from ``bench_e2e.py`` results: one
line per engine and results file (FLASH_ATTN dashed; points only where two lengths were
measured).

Usage: python scripts/plot_e2e.py --out ttft.png DIR [DIR ...]   (each DIR holds a
bench_e2e.json; needs matplotlib)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "results", nargs="+", type=Path, help="folders holding bench_e2e.json"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    gpus = set()
    for folder in args.results:
        data = json.loads((folder / "bench_e2e.json").read_text())
        git = data["meta"]["git"]
        gpus.add(data["meta"]["gpu"])
        for result in data["results"]:
            points = sorted((int(n), t) for n, t in result["ttft_s"].items())
            style = "--" if result["backend"] == "FLASH_ATTN" else "-"
            if len(points) < 3:  # no line through the lengths not measured
                style = "none"
            ax.plot(
                [n / 1024 for n, _ in points],
                [t for _, t in points],
                linestyle=style,
                marker="o",
                markersize=7 if style == "none" else 5,
                label=f"{result['name']} (git {git})",
            )
    ax.set_xlabel("prompt tokens (K)")
    ax.set_ylabel("time to first token (s)")
    gpu = " / ".join(sorted(gpus))
    ax.set_title(f"Dummy-weight Llama-3.1-8B, one {gpu}, vLLM chunked prefill")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
