"""Optional per-layer selection statistics of the vLLM backend (for benchmarks and
debugging): with ``VLLM_FLEXPREFILL_STATS=/path/file.jsonl`` set, every sparse forward
appends one JSON line::

    {"layer": name, "requests": [[q_len, kv_len], ...],
     "selected_blocks": int, "causal_blocks": int,        # block pairs, all heads and requests
     "patterns": [vertical_slash, query_aware, dense],    # head counts
     "head_selected": [[...per head...], ...per request], "head_patterns": [[...], ...]}

Reading the counts synchronises with the GPU, so leave it unset when serving."""

from __future__ import annotations

import json
import os

import torch

from .blocks import ChunkGeometry

STATS_ENV = "VLLM_FLEXPREFILL_STATS"


def record(path: str, layer: str, plan, result, num_heads: int) -> None:
    offsets = plan.q_block_offset.tolist()
    per_head = torch.stack([result.kv_count[:, a:b].sum(1) for a, b in zip(offsets, offsets[1:])])
    line = {
        "layer": layer,
        "requests": [[q, kv] for q, kv in zip(plan.q_lens, plan.kv_lens)],
        "selected_blocks": int(result.kv_count.sum()),
        "causal_blocks": num_heads * sum(ChunkGeometry(q, kv, plan.block_size).num_causal_pairs
                                         for q, kv in zip(plan.q_lens, plan.kv_lens)),
        "patterns": torch.bincount(result.pattern.flatten().long(), minlength=3).tolist(),
        "head_selected": per_head.tolist(),
        "head_patterns": result.pattern.tolist(),
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def stats_path() -> str | None:
    return os.environ.get(STATS_ENV) or None
