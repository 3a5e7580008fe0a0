"""FlexPrefill as a transformers attention implementation (``vllm_flexprefill.hf``):
the reference on a plain causal prefill, and what it refuses rather than ignore."""

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vllm_flexprefill import FlexPrefillConfig, hf
from vllm_flexprefill.reference import flex_prefill_reference

# max_density 1: the search's selection is attended however dense (random inputs
# attend evenly)
CONFIG = FlexPrefillConfig(
    block_size=64, min_budget=64, dense_threshold=0, max_density=1.0
)
S = 200


class Layer:
    """An attention module as transformers passes it."""

    layer_idx = 0


def qkv(seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 4, S, 16, generator=gen)
    k, v = (torch.randn(1, 2, S, 16, generator=gen) for _ in range(2))
    return q, k, v


def test_a_causal_prefill_runs_the_reference_with_or_without_its_mask():
    attention = ALL_ATTENTION_FUNCTIONS[hf.register(CONFIG)]
    q, k, v = qkv()
    want, _, stats = flex_prefill_reference(
        q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), CONFIG, 0.25
    )
    causal = torch.ones(S, S, dtype=torch.bool).tril()[None, None]
    additive = torch.zeros(1, 1, S, S).masked_fill(~causal, float("-inf"))
    assert "dense" not in stats.pattern  # the search ran, not the dense fallback
    for mask in (None, causal, additive):
        out, _ = attention(Layer(), q, k, v, mask, scaling=0.25, sliding_window=None)
        assert torch.equal(out[0], want)


@pytest.mark.parametrize(
    "mask_or_setting, message",
    [
        ("padding", "the plain causal mask only"),
        ({"sliding_window": 64}, "sliding-window attention (sliding_window=64)"),
        ({"softcap": 30.0}, "logit soft-capping (softcap=30.0)"),
        ({"s_aux": "sinks"}, "attention sinks (s_aux='sinks')"),
    ],
)
def test_what_the_reference_lacks_is_refused(mask_or_setting, message):
    attention = ALL_ATTENTION_FUNCTIONS[hf.register(CONFIG)]
    q, k, v = qkv()
    mask, settings = None, {}
    if mask_or_setting == "padding":  # the first query's key masked: left padding
        mask = torch.ones(S, S, dtype=torch.bool).tril()[None, None].clone()
        mask[..., :, 0] = False
    else:
        settings = mask_or_setting
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        attention(Layer(), q, k, v, mask, **settings)


def test_per_layer_settings_need_the_modules_layer_index():
    layered = CONFIG.with_overrides({"layers": [{"first": 1, "last": 1, "gamma": 0.8}]})
    attention = ALL_ATTENTION_FUNCTIONS[hf.register(layered)]
    with pytest.raises(ValueError, match="need each attention module's layer_idx"):
        attention(object(), *qkv(), None)
