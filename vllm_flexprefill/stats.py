"""Optional per-layer selection statistics of the vLLM backend (for benchmarks and
debugging): with ``VLLM_FLEXPREFILL_STATS=/path/file.jsonl`` set, every layer call with
sparse rows appends one JSON line::

    {"layer": name, "requests": [[q_len, kv_len], ...],
     "settings": [{"gamma": ..., ...}, ...],          # per request, as it ran
     "ran": "sparse" | "dense", "reason": "...",      # the density guard's decision
     "causal_blocks": int,                            # block pairs, all heads, requests
     "selected_blocks": int | null,                   # null: no search ran
     "patterns": [...],                               # head counts by Pattern code
     "head_selected": [[...per head...], ...per request], "head_patterns": [[...], ...]}

A call that ran dense without searching has null selections. Writing a line reads the
selection back, which synchronises with the GPU: leave it unset when serving.
:func:`read`, :func:`density` and :func:`computed_density` read the file back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import SETTINGS, FlexPrefillConfig
from .selection import Pattern

STATS_ENV = "VLLM_FLEXPREFILL_STATS"


def stats_path() -> str | None:
    """The file named by ``$VLLM_FLEXPREFILL_STATS``, or None when statistics are
    off; one that cannot be appended to is refused here (at start-up), naming the
    variable."""
    path = os.environ.get(STATS_ENV) or None
    if path is not None:
        try:
            with open(path, "a"):
                pass
        except OSError as error:
            raise ValueError(
                f"{STATS_ENV}={path!r}: cannot append to it ({error.strerror}); "
                "allowed: a writable file's path, or unset (no statistics)"
            ) from None
    return path


def record(
    path: str, layer: str, plan, configs, result, num_heads: int, ran: str, reason: str
) -> None:
    """Append the line of one layer call: ``plan`` a ``SparsePlan``, ``configs`` the
    layer's ``FlexPrefillConfig`` or one per request (their own settings), ``result``
    its ``SearchResult`` (None if no search ran), ``ran`` "sparse" or "dense" and the
    guard's ``reason``."""
    lens = list(zip(plan.q_lens, plan.kv_lens, strict=True))
    if isinstance(configs, FlexPrefillConfig):
        configs = [configs] * len(lens)
    line = {
        "layer": layer,
        "requests": [list(pair) for pair in lens],
        "settings": [c.model_dump(include=set(SETTINGS)) for c in configs],
        "ran": ran,
        "reason": reason,
        "causal_blocks": num_heads * sum(plan.causal_pairs),
    }
    if result is None:
        line |= dict.fromkeys(SELECTION_KEYS)
    else:
        line |= _selection(plan, result)
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


SELECTION_KEYS = ("selected_blocks", "patterns", "head_selected", "head_patterns")


def _selection(plan, result) -> dict:
    offsets = plan.q_block_offset.tolist()
    per_head = torch.stack(
        [
            result.kv_count[:, a:b].sum(1)
            for a, b in zip(offsets, offsets[1:], strict=False)
        ]
    )
    return {
        "selected_blocks": int(result.kv_count.sum()),
        "patterns": torch.bincount(
            result.pattern.flatten().long(), minlength=len(Pattern)
        ).tolist(),
        "head_selected": per_head.tolist(),
        "head_patterns": result.pattern.tolist(),
    }


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
    """Selected / causal block pairs over the lines that searched (None if none
    did)."""
    searched = [line for line in lines if line["selected_blocks"] is not None]
    causal = sum(line["causal_blocks"] for line in searched)
    selected = sum(line["selected_blocks"] for line in searched)
    return selected / causal if causal else None


def computed_density(lines: list[dict]) -> float | None:
    """Block pairs the attention computed / causal ones over the lines: a call that
    ran dense computed every causal block (None if the lines hold none)."""
    causal = sum(line["causal_blocks"] for line in lines)
    computed = sum(
        line["selected_blocks"] if line["ran"] == "sparse" else line["causal_blocks"]
        for line in lines
    )
    return computed / causal if causal else None
