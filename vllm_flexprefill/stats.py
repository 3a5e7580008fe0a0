"""Optional per-layer selection statistics of the vLLM backend (for benchmarks and
debugging): with ``VLLM_FLEXPREFILL_STATS=/path/file.jsonl`` set, every sparse forward
appends one JSON line::

    {"layer": name, "requests": [[q_len, kv_len], ...],
     "selected_blocks": int, "causal_blocks": int,  # block pairs, all heads, requests
     "patterns": [...],                             # head counts by Pattern code
     "head_selected": [[...per head...], ...per request], "head_patterns": [[...], ...]}

Writing a line reads the selection back, which synchronises with the GPU: leave it
unset when serving. :func:`read` and :func:`density` read the file back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .blocks import ChunkGeometry
from .selection import Pattern

STATS_ENV = "VLLM_FLEXPREFILL_STATS"


def stats_path() -> str | None:
    """The file named by ``$VLLM_FLEXPREFILL_STATS``, or None when statistics are
    off."""
    return os.environ.get(STATS_ENV) or None


def record(path: str, layer: str, plan, result, num_heads: int) -> None:
    """Append the line of one layer's forward: ``plan`` a ``SparsePlan``, ``result`` its
    ``SearchResult``."""
    offsets = plan.q_block_offset.tolist()
    per_head = torch.stack(
        [
            result.kv_count[:, a:b].sum(1)
            for a, b in zip(offsets, offsets[1:], strict=False)
        ]
    )
    line = {
        "layer": layer,
        "requests": [[q, kv] for q, kv in zip(plan.q_lens, plan.kv_lens, strict=True)],
        "selected_blocks": int(result.kv_count.sum()),
        "causal_blocks": num_heads
        * sum(
            ChunkGeometry(q, kv, plan.block_size).num_causal_pairs
            for q, kv in zip(plan.q_lens, plan.kv_lens, strict=True)
        ),
        "patterns": torch.bincount(
            result.pattern.flatten().long(), minlength=len(Pattern)
        ).tolist(),
        "head_selected": per_head.tolist(),
        "head_patterns": result.pattern.tolist(),
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def read(path: str | Path, start: int = 0, stop: int | None = None) -> list[dict]:
    """Lines ``start .. stop - 1`` of a statistics file (none if it does not exist
    yet)."""
    path = Path(path)
    return (
        [json.loads(line) for line in path.read_text().splitlines()[start:stop]]
        if path.exists()
        else []
    )


def density(lines: list[dict]) -> float | None:
    """Selected / causal block pairs over the lines (None if they hold none)."""
    causal = sum(line["causal_blocks"] for line in lines)
    return sum(line["selected_blocks"] for line in lines) / causal if causal else None
