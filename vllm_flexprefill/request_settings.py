"""Per-request FlexPrefill settings, carried in a request's extra arguments.

A request asks for other settings than the server's with the key ``flexprefill`` of
``SamplingParams.extra_args`` (over the OpenAI API: ``vllm_xargs``, which carries flat
strings and numbers):

* ``"dense"``: its prefill runs dense (FlashAttention), whatever its length;
* a preset name (``"llama-3.1-8b-instruct"``, ...): that preset's settings;
* a JSON object of settings, e.g. ``'{"gamma": 0.95}'`` (offline, a dict works too):
  the server's settings with those changed.

Every setting but ``block_size`` (a batch shares one block grid) and ``layers`` (the
server's per-layer structure) can change per request; a preset's ``block_size`` stays
the server's, and ``rerank_budget: head`` comes with ``selection: rerank`` in the same
request. Requests with different settings share a batch: the search takes one
config per request. Per layer, a request's settings apply over that layer's.

vLLM 0.24 shows an attention backend no request: its metadata builder sees token
counts, not request ids or sampling parameters. The one supported hook that sees both
is a logits processor: vLLM calls its ``update_state`` with the requests added to,
removed from and moved within the persistent batch after the batch is condensed and
reordered and before the attention metadata is built, so batch slot ``i`` is attention
row ``i`` of that step; and its ``validate_params`` runs on every request's sampling
parameters at the front end, where a ``ValueError`` becomes HTTP 400. So the feature is
:class:`RequestSettings`, enabled with
``--logits-processors vllm_flexprefill.request_settings:RequestSettings`` (offline:
``LLM(logits_processors=[RequestSettings])``). It leaves the logits as they are. Its
costs, from vLLM: a model that would run on Model Runner V2 runs on V1 instead, and
speculative decoding is refused; without it, a request's ``flexprefill`` entry is not
seen at all.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from .config import (
    SETTINGS,
    ConfigError,
    FlexPrefillConfig,
    load_config,
    preset_names,
    reads_as,
)

EXTRA_ARG = "flexprefill"
# the engine argument that enables the feature: --logits-processors HOOK
HOOK = "vllm_flexprefill.request_settings:RequestSettings"
DENSE = "dense"
# what a request may change
PER_REQUEST = tuple(name for name in SETTINGS if name != "block_size")


@dataclass(frozen=True)
class RequestSetting:
    """One request's ask: dense, or settings to change (``(name, value)`` pairs)."""

    dense: bool = False
    changes: tuple[tuple[str, Any], ...] = ()

    def config_over(self, config: FlexPrefillConfig) -> FlexPrefillConfig | None:
        """The settings this request runs with where ``config`` is in force: None
        for dense."""
        return None if self.dense else _merged(config, self.changes)


@lru_cache(maxsize=1024)  # bounded: the keys come from requests
def _merged(
    config: FlexPrefillConfig, changes: tuple[tuple[str, Any], ...]
) -> FlexPrefillConfig:
    """``config`` with ``changes``. A budget the request gives wins over the layer's
    other one: asked ``max_budget`` 512 where the layer's ``min_budget`` is 1024, the
    minimum becomes 512 too (and an asked ``min_budget`` above the layer's maximum
    raises the maximum), so every asked value runs as asked. A request that moves a
    layer off ``selection: rerank`` leaves its ``rerank_budget`` (rerank's only) behind:
    the layer's ``head`` becomes ``row``. (Each value, the order of two asked budgets,
    and a ``rerank_budget: head`` asked only with ``selection: rerank`` were checked at
    the front end: this cannot fail.)"""
    asked = dict(changes)
    low, high = asked.get("min_budget"), asked.get("max_budget")
    layer_low, layer_high = config.min_budget, config.max_budget
    if high is not None and low is None and layer_low > high:
        asked["min_budget"] = high
    if low is not None and "max_budget" not in asked and (layer_high or low) < low:
        asked["max_budget"] = low
    if asked.get("selection", config.selection) != "rerank":
        asked.setdefault("rerank_budget", "row")
    return config.with_overrides(asked, source=EXTRA_ARG)


def parse(extra_args: Mapping[str, Any] | None) -> RequestSetting | None:
    """The request's setting from its extra arguments (None: the server's). Raises
    :class:`ConfigError` (a ``ValueError``) naming the field, the value and what is
    allowed."""
    extra_args = extra_args or {}
    for key in extra_args:
        if reads_as(key, EXTRA_ARG):
            raise ConfigError(
                f"extra argument {key!r} is not {EXTRA_ARG!r}: FlexPrefill reads "
                f'a request\'s settings from the key "{EXTRA_ARG}" only (spelt so)'
            )
    value = extra_args.get(EXTRA_ARG)
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == DENSE:
            return RequestSetting(dense=True)
        if text in preset_names():
            preset = load_config(text)
            return _setting({name: getattr(preset, name) for name in PER_REQUEST})
        if text.startswith("{"):
            value = _json_settings(text)
        else:
            raise ConfigError(
                f"{EXTRA_ARG}: {text!r} is neither {DENSE!r}, a preset "
                f"({', '.join(preset_names())}) nor a JSON object of settings"
            )
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{EXTRA_ARG} must be {DENSE!r}, a preset name or a mapping of settings; "
            f"got {type(value).__name__} {value!r}"
        )
    return _setting(value)


def _json_settings(text: str) -> Any:
    """``text`` parsed as JSON, each key once; a :class:`ConfigError` naming the
    problem otherwise."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"{EXTRA_ARG}: field {key!r} given twice (each once)")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except ConfigError:
        raise
    except json.JSONDecodeError as err:
        problem = f"{err.msg} at character {err.pos}"
    except RecursionError:
        problem = "nested too deeply"
    except ValueError as err:  # a number of more digits than Python converts
        problem = str(err)
    raise ConfigError(
        f"{EXTRA_ARG}: not a JSON object of settings ({problem}): {reprlib.repr(text)}"
    )


def _setting(changes: Mapping[str, Any]) -> RequestSetting:
    """Checked changes: names a request may change, values each setting allows."""
    for name in changes:
        if name not in PER_REQUEST:
            why = (
                "the batch shares one block grid"
                if name == "block_size"
                else "per-layer settings are the server's"
                if name == "layers"
                else "unknown setting"
            )
            raise ConfigError(
                f"{EXTRA_ARG}.{name}: cannot be set per request ({why}); "
                f"allowed: {', '.join(PER_REQUEST)}"
            )
    # each value within its field's limits, the budgets ordered if both are given
    # and rerank_budget with the request's own selection (the same messages as the
    # YAML's); against the server's settings when a layer runs (see
    # RequestSetting.config_over)
    _ANY_VALUES.with_overrides(changes, source=EXTRA_ARG)
    # rerank_budget applies to selection rerank only, and the layers' selections may
    # be any: rerank's head-wide budget is asked for together with rerank itself
    if changes.get("rerank_budget", "row") != "row" and "selection" not in changes:
        raise ConfigError(
            f"{EXTRA_ARG}.rerank_budget: {changes['rerank_budget']!r} needs selection "
            "'rerank' in the same request (the layers' selections may be any); "
            "allowed alone: 'row'"
        )
    return RequestSetting(changes=tuple(sorted(changes.items())))


# a base that any single value fits: any budget, and any rerank_budget (a selection
# the request gives replaces rerank, so the pair is checked as asked)
_ANY_VALUES = FlexPrefillConfig(min_budget=1, max_budget=None, selection="rerank")


class RequestSettings(LogitsProcessor):
    """The logits processor that hands each request's ``flexprefill`` setting to the
    FLEXPREFILL backend (see the module docstring); the logits pass unchanged.

    vLLM builds one with each model runner's input batch, in the worker process that
    also builds the attention metadata (one engine per process, as vLLM's V1 engine
    core runs); :func:`batch_settings` reads the newest one's per-slot settings."""

    current: RequestSettings | None = None

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.by_slot: dict[int, RequestSetting] = {}
        RequestSettings.current = self

    def update_state(self, batch_update) -> None:
        process_dict_updates(
            self.by_slot,
            batch_update,
            lambda params, _prompt, _output: parse(params.extra_args),
        )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True


def enabled(logits_processors: list | None) -> bool:
    """Whether an engine's ``logits_processors`` (vLLM's model config: classes or
    ``"module:Class"`` names) include :class:`RequestSettings`."""
    return any(
        entry == HOOK
        or (isinstance(entry, type) and issubclass(entry, RequestSettings))
        for entry in logits_processors or ()
    )


def batch_settings(num_reqs: int) -> tuple[RequestSetting | None, ...]:
    """Per row of this step's batch, its request's setting (None: the server's)."""
    processor = RequestSettings.current
    if processor is None or not processor.by_slot:
        return (None,) * num_reqs
    return tuple(processor.by_slot.get(i) for i in range(num_reqs))
