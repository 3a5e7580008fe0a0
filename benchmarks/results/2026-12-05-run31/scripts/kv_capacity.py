"""Run 31's prepared check: the KV cache an engine gets with FLASH_ATTN and with
FLEXPREFILL (dummy Llama-3.1-8B, 128K context, vLLM's defaults otherwise, decode-only
CUDA graphs). FLEXPREFILL's profiling pass counts its step scratch, so its cache should
be smaller by about the scratch its log reports ("FlexPrefill: ... GiB of prefill
scratch"), once, not twice.

Usage (GPU machine, from /tmp, scripts/ on PYTHONPATH): python kv_capacity.py OUT.json
"""

import json
import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine's config in this process

from common import LLAMA_8B_MODEL, make_llm  # noqa: E402

GiB = 1 << 30
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads, d 128, bf16


def main() -> None:
    backend = sys.argv[2]
    llm = make_llm(backend, 131072, compiled=False, model=LLAMA_8B_MODEL)
    cache = llm.llm_engine.vllm_config.cache_config
    tokens = cache.num_gpu_blocks * cache.block_size
    result = dict(
        backend=backend,
        num_gpu_blocks=cache.num_gpu_blocks,
        block_size=cache.block_size,
        kv_tokens=tokens,
        kv_gib=tokens * KV_BYTES_PER_TOKEN / GiB,
    )
    print(result, flush=True)
    with open(sys.argv[1], "a") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
