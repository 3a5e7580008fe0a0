"""vllm-flexprefill: FlexPrefill sparse prefill attention (Lai et al., ICLR 2025) for vLLM.

``from vllm_flexprefill import FlexPrefillConfig, load_config, flex_prefill_attention``
gives the functional API. Importing the package also registers the ``FLEXPREFILL``
attention backend name with vLLM when vLLM is installed.
"""

from .api import flex_prefill_attention
from .config import ConfigError, FlexPrefillConfig, load_config
from .reference import RequestStats

__all__ = ["ConfigError", "FlexPrefillConfig", "RequestStats", "flex_prefill_attention", "load_config"]
