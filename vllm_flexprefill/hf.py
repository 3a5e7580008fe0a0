"""FlexPrefill as a Hugging Face transformers attention implementation, through the
PyTorch reference (for fidelity checks on a CPU; serving goes through the vLLM
backend).

    name = register(load_config("default"))
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=name)

Each layer applies its per-layer settings (``layer_idx``). Supports full causal prefill
of unpadded sequences (no KV cache reuse), which is what a perplexity measurement needs;
padding or other masks, sliding windows, logit soft-capping and attention sinks are
refused, as are per-layer settings on a module without ``layer_idx``.
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
        _refuse_unsupported(module, attention_mask, query.shape[2], kwargs, config)
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


# transformers' attention keyword arguments for features the reference lacks
UNSUPPORTED = {
    "sliding_window": "sliding-window attention",
    "softcap": "logit soft-capping",
    "s_aux": "attention sinks",
}


def _refuse_unsupported(
    module, attention_mask, seq_len: int, kwargs: dict, config: FlexPrefillConfig
) -> None:
    """Refuse what the reference would silently ignore: a mask other than the plain
    causal one (``[B, 1, S, S]``, bool or additive), the features of
    :data:`UNSUPPORTED`, and per-layer settings without the module's ``layer_idx``."""
    if attention_mask is not None:
        allowed = (
            attention_mask
            if attention_mask.dtype == torch.bool
            else attention_mask == 0
        )
        causal = torch.ones(
            seq_len, seq_len, dtype=torch.bool, device=allowed.device
        ).tril()
        if allowed.shape[-2:] != causal.shape or not bool((allowed == causal).all()):
            raise ValueError(
                "the flexprefill attention implementation supports the plain causal "
                "mask only (unpadded sequences), got another attention_mask"
            )
    for name, feature in UNSUPPORTED.items():
        if kwargs.get(name) is not None:
            raise ValueError(
                f"the flexprefill attention implementation does not support {feature} "
                f"({name}={kwargs[name]!r})"
            )
    if config.layers and getattr(module, "layer_idx", None) is None:
        raise ValueError(
            "per-layer settings (layers) need each attention module's layer_idx; "
            f"{type(module).__name__} has none"
        )
