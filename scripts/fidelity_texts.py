"""The real long texts of the fidelity measurements, identical on every machine with this
project's pinned dependencies installed (no downloads):

* ``code``: the source of two vLLM 0.24.0 modules (code, comments, docstrings);
* ``prose``: the long descriptions (READMEs) and licence texts of vLLM 0.24.0 and torch 2.11.0.

Used by ``fidelity_gpu.py`` (through vLLM) and ``fidelity_cpu.py`` (transformers and the
PyTorch reference), so both measure the same token ids.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

CODE_MODULES = ["vllm.v1.core.sched.scheduler", "vllm.entrypoints.llm"]
PROSE_PACKAGES = ["vllm", "torch"]


def code_text() -> str:
    return "\n\n".join(Path(importlib.util.find_spec(name).origin).read_text() for name in CODE_MODULES)


def prose_text() -> str:
    parts = []
    for name in PROSE_PACKAGES:
        meta = importlib.metadata.metadata(name)
        parts.append(meta.get_payload() or meta.get("Description") or "")
        for file in importlib.metadata.files(name) or []:
            if file.name.upper().startswith(("LICENSE", "COPYING")) and file.suffix in ("", ".txt", ".md"):
                parts.append(Path(file.locate()).read_text(errors="ignore"))
    return "\n\n".join(p for p in parts if p.strip())


def texts(tokenizer, lengths: list[int], max_model_len: int) -> dict[str, list[int]]:
    """``{"code 4K": ids, ...}``: each text cut to each length in tokens (at most
    ``max_model_len - 1``: vLLM refuses a prompt that fills the whole context)."""
    out = {}
    for kind, text in (("code", code_text()), ("prose", prose_text())):
        ids = tokenizer(text).input_ids
        for n in lengths:
            n = min(n, max_model_len - 1)
            if len(ids) >= n:
                out[f"{kind} {round(n / 1024)}K"] = ids[:n]
    return out


def ids_digest(ids: list[int]) -> str:
    """Identifies a text's token ids across runs and machines (both fidelity scripts report it)."""
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
