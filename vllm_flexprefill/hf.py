"""FlexPrefill as a Hugging Face transformers attention implementation, through the
PyTorch reference (for fidelity checks on a CPU; serving goes through the vLLM
backend).

    name = register(load_config("default"))
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=name)

Each layer applies its per-layer settings (``layer_idx``). Supports full causal prefill
of unpadded sequences (no KV cache reuse), which is what a perplexity measurement needs.
"""

from __future__ import annotations

import torch

from .config import FlexPrefillConfig
from .reference import flex_prefill_reference
from .selection import RequestStats

NAME = "flexprefill"


def register(
    config: FlexPrefillConfig, selections: list[RequestStats] | None = None
) -> str:
    """Register (or re-register with new settings) the ``"flexprefill"``
    implementation; each call's selection (per layer and sequence) is appended to
    ``selections`` if given."""
    from transformers import AttentionInterface

    def attention(
        module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
    ):
        """``query [B, H, S, D]``, ``key, value [B, Hkv, S, D]`` ->
        ``([B, S, H, D], None)``."""
        if query.shape[2] != key.shape[2]:
            raise ValueError(
                "the flexprefill attention implementation supports whole-sequence "
                "prefill only"
            )
        layer_config = config.for_layer(getattr(module, "layer_idx", None))
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        outputs = []
        for q, k, v in zip(query, key, value, strict=True):
            out, _, stats = flex_prefill_reference(
                q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                layer_config, scale,
            )  # fmt: skip
            outputs.append(out)
            if selections is not None:
                selections.append(stats)
        return torch.stack(outputs).to(query.dtype), None

    AttentionInterface.register(NAME, attention)
    return NAME
