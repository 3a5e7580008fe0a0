"""vLLM plugin entry point: make ``FLEXPREFILL`` an attention backend name, and resolve
the FlexPrefill configuration from vLLM's config.

vLLM 0.24's ``AttentionBackendEnum`` is closed; its one slot for out-of-tree backends is
``CUSTOM``. ``register()`` points ``CUSTOM`` at :class:`FlexPrefillBackend` and adds the
name ``FLEXPREFILL`` (any case) as an alias of ``CUSTOM``, so every spelling
(``--attention-backend``, ``-ac.backend=``, ``--attention-config``,
``LLM(attention_backend=...)``) resolves, and a pickled config decodes in spawned
processes (it pickles as ``CUSTOM``). vLLM calls ``register()`` in every process through
the ``vllm.general_plugins`` entry point; ``import vllm_flexprefill`` calls it too.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from .config import ConfigError, FlexPrefillConfig, load_config

BACKEND_NAME = "FLEXPREFILL"
BACKEND_PATH = "vllm_flexprefill.backend.FlexPrefillBackend"
CONFIG_ENV = "VLLM_FLEXPREFILL_CONFIG"
ADDITIONAL_CONFIG_KEY = "flexprefill"


def register() -> None:
    """Register the backend with vLLM. Idempotent; leaves other backends untouched."""
    from vllm.v1.attention.backends.registry import (
        AttentionBackendEnum,
        register_backend,
    )

    register_backend(AttentionBackendEnum.CUSTOM, BACKEND_PATH)
    AttentionBackendEnum._member_map_.setdefault(
        BACKEND_NAME, AttentionBackendEnum.CUSTOM
    )


def resolve_config(additional_config: dict[str, Any] | None) -> FlexPrefillConfig:
    """The configuration in force: ``additional_config["flexprefill"]`` (its ``config``
    key names a preset or YAML file, its other keys override the file's), else the file
    named by ``$VLLM_FLEXPREFILL_CONFIG``, else the ``default`` preset.

    Resolved (and its file read) once per process for given settings and environment:
    every attention layer and the metadata builder ask for it."""
    settings = (additional_config or {}).get(ADDITIONAL_CONFIG_KEY) or {}
    return _resolve(
        json.dumps(settings, sort_keys=True, default=str), os.environ.get(CONFIG_ENV)
    )


@lru_cache(maxsize=16)
def _resolve(settings_json: str, env_source: str | None) -> FlexPrefillConfig:
    settings = dict(json.loads(settings_json))
    source = settings.pop("config", None) or env_source or "default"
    config = load_config(source)
    if settings:
        config = config.with_overrides(
            settings, f'--additional-config "{ADDITIONAL_CONFIG_KEY}" (over {source})'
        )
    return config


__all__ = ["BACKEND_NAME", "ConfigError", "register", "resolve_config"]
