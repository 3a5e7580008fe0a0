"""Run 32: a FLEXPREFILL engine at --gpu-memory-utilization 0.95 (dummy Llama-3.1-8B, 128K
context, guard off so every layer runs sparse) prefills a 128K-token prompt and two 64K ones
at once without running out of memory: the step scratch fits what the profile left.
Usage (GPU machine, from /tmp, scripts/ on PYTHONPATH): python high_utilization.py OUT.json"""
import json
import os
import sys
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

from common import LLAMA_8B_MODEL, make_llm, sampling  # noqa: E402


def main() -> None:
    llm = make_llm("FLEXPREFILL", 131072, compiled=False, model=LLAMA_8B_MODEL,
                   gpu_memory_utilization=0.95)
    prompts = [dict(prompt_token_ids=[(7 * i + n) % 32000 + 100 for i in range(length)])
               for n, length in enumerate([131000, 65536, 65536])]
    start = time.perf_counter()
    outputs = llm.generate(prompts, sampling(4))
    result = dict(seconds=round(time.perf_counter() - start, 2),
                  tokens=[len(o.outputs[0].token_ids) for o in outputs],
                  num_gpu_blocks=llm.llm_engine.vllm_config.cache_config.num_gpu_blocks)
    print(result, flush=True)
    with open(sys.argv[1], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
