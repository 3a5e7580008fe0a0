"""vLLM plugin entry point: make ``FLEXPREFILL`` an attention backend name, and resolve
the FlexPrefill configuration from vLLM's config.

vLLM 0.24's ``AttentionBackendEnum`` is closed; its one slot for out-of-tree backends is
``CUSTOM``. ``register()`` points ``CUSTOM`` at :class:`FlexPrefillBackend` and adds the
name ``FLEXPREFILL`` (any case) as an alias of ``CUSTOM``, so every spelling
(``--attention-backend``, ``-ac.backend=``, ``--attention-config``,
``LLM(attention_backend=...)``) resolves, and a pickled config decodes in spawned
processes (it pickles as ``CUSTOM``). vLLM calls ``register()`` in every process through
the ``vllm.general_plugins`` entry point; ``import vllm_flexprefill`` calls it too.

vLLM's list of environment variables is closed as well: it warns about any other
``VLLM_*`` variable it finds set. ``register()`` adds ours
(``VLLM_FLEXPREFILL_CONFIG``, ``VLLM_FLEXPREFILL_STATS``, the metrics' folder
``metrics.METRICS_ENV`` and the converted checkpoints' ``models.CACHE_ENV``) to it,
and installs the metrics (``metrics.install``).
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from . import metrics
from .config import (
    FIELDS,
    ConfigError,
    FlexPrefillConfig,
    load_config,
    preset_names,
    reads_as,
)
from .models import CACHE_ENV
from .stats import STATS_ENV

BACKEND_NAME = "FLEXPREFILL"
BACKEND_PATH = "vllm_flexprefill.backend.FlexPrefillBackend"
CONFIG_ENV = "VLLM_FLEXPREFILL_CONFIG"
ADDITIONAL_CONFIG_KEY = "flexprefill"
# How messages name our part of vLLM's additional_config.
_WHERE = f'--additional-config "{ADDITIONAL_CONFIG_KEY}"'


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
    metrics.install()
    _declare_environment_variables()


def _declare_environment_variables() -> None:
    """Add our variables to ``vllm.envs.environment_variables``, the closed list that
    ``vllm.envs.validate_environ`` checks ``os.environ`` against (a workaround, like
    the enum alias: vLLM has no API for it). Each entry reads the environment, as
    vLLM's own do."""
    import vllm.envs

    for name in (CONFIG_ENV, STATS_ENV, metrics.METRICS_ENV, CACHE_ENV):
        vllm.envs.environment_variables.setdefault(
            name, lambda name=name: os.environ.get(name)
        )


def resolve_config(additional_config: dict[str, Any] | None) -> FlexPrefillConfig:
    """The configuration in force: ``additional_config["flexprefill"]`` (a preset name
    or YAML path, or a mapping whose ``config`` key names one and whose other keys
    override it), else the file named by ``$VLLM_FLEXPREFILL_CONFIG``, else the
    ``default`` preset. Misspelt or missing ``"flexprefill"`` wrappers are refused.

    Resolved (and its file read) once per process for given settings and environment:
    every attention layer and the metadata builder ask for it."""
    # vLLM also allows an object with a compute_hash(): no settings of ours there
    additional = additional_config if isinstance(additional_config, Mapping) else {}
    _check_keys(additional)
    settings = _settings(additional.get(ADDITIONAL_CONFIG_KEY))
    return _resolve(
        json.dumps(settings, sort_keys=True, default=_json_value),
        os.environ.get(CONFIG_ENV),
    )


def _json_value(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: numbers of other types (numpy's) as
    numbers, a layer override as its fields, anything else as text (which validation
    then refuses, showing it)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return str(value)


def _check_keys(additional: Mapping[str, Any]) -> None:
    """Refuse keys meant for us that vLLM would pass on unnoticed: a near miss of
    ``"flexprefill"``, or a setting given without it (``"config"`` too, where it
    names one of our presets or a YAML file). Other plugins' keys pass."""
    for key in additional:
        if key == ADDITIONAL_CONFIG_KEY or not isinstance(key, str):
            continue
        if reads_as(key, ADDITIONAL_CONFIG_KEY):
            raise ConfigError(
                f"--additional-config key {key!r} is not {ADDITIONAL_CONFIG_KEY!r}: "
                f"FlexPrefill reads its settings from the key "
                f'"{ADDITIONAL_CONFIG_KEY}" only (spelt exactly so)'
            )
        if key in FIELDS or (key == "config" and _names_a_config(additional[key])):
            example = json.dumps({ADDITIONAL_CONFIG_KEY: {key: additional[key]}})
            raise ConfigError(
                f"--additional-config key {key!r} is a FlexPrefill setting; allowed "
                f'only under "{ADDITIONAL_CONFIG_KEY}": '
                f"--additional-config '{example}'"
            )


def _names_a_config(value: Any) -> bool:
    """Whether ``value`` reads as one of our config sources: a preset name or a YAML
    path."""
    return isinstance(value, str) and (
        value in preset_names() or value.endswith((".yaml", ".yml"))
    )


def _settings(value: Any) -> dict[str, Any]:
    """``additional_config["flexprefill"]`` as a mapping of settings (a string names
    the config file)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"config": value}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{_WHERE} must be a preset name or YAML path, or a mapping of settings "
            f'({{"config": name or path, "gamma": 0.95, ...}}); '
            f"got {type(value).__name__} {value!r}"
        )
    unknown = [key for key in value if key != "config" and key not in FIELDS]
    if unknown:
        raise ConfigError(
            f"{_WHERE}: unknown field {unknown[0]!r} (got {value[unknown[0]]!r}); "
            f"allowed fields: config (a preset name or YAML path), {', '.join(FIELDS)}"
        )
    source = value.get("config")
    if source is not None and (not isinstance(source, str) or not source):
        raise ConfigError(
            f'{_WHERE} "config" must be a preset name '
            f"({', '.join(preset_names())}) or a YAML file's path; "
            f"got {type(source).__name__} {source!r}"
        )
    return dict(value)


@lru_cache(maxsize=16)
def _resolve(settings_json: str, env_source: str | None) -> FlexPrefillConfig:
    settings = dict(json.loads(settings_json))
    given = settings.pop("config", None)
    source = given or env_source or "default"
    try:
        config = load_config(source)
    except ConfigError as err:
        if not (given or env_source):
            raise
        origin = f'{_WHERE} "config"' if given else f"${CONFIG_ENV}"
        raise ConfigError(f"{origin}: {err}") from None
    if settings:
        config = config.with_overrides(settings, f"{_WHERE} (over {source})")
    return config


__all__ = ["BACKEND_NAME", "ConfigError", "register", "resolve_config"]
