"""vllm-flexprefill: FlexPrefill sparse prefill attention (Lai et al., ICLR 2025)
for vLLM.

``from vllm_flexprefill import FlexPrefillConfig, load_config, flex_prefill_attention``
gives the functional API; ``RequestStats`` and ``Pattern`` describe what it selected.
Importing the package also registers the ``FLEXPREFILL`` attention backend name with
vLLM when vLLM is installed.
"""

import importlib.util

from .api import flex_prefill_attention
from .config import ConfigError, FlexPrefillConfig, load_config
from .selection import Pattern, RequestStats

# needed for LLM(attention_config={"backend": ...})
if importlib.util.find_spec("vllm") is not None:
    from .plugin import register

    register()

__all__ = [
    "ConfigError",
    "FlexPrefillConfig",
    "Pattern",
    "RequestStats",
    "flex_prefill_attention",
    "load_config",
]
