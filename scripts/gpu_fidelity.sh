#!/usr/bin/env bash
# On the GPU machine (after the vLLM and SmolLM2 wheel stages): fidelity of FLEXPREFILL vs
# FLASH_ATTN on SmolLM2-135M-Instruct; results under $OUT.
source scripts/gpu_setup.sh
model=$(python3 -m vllm_flexprefill.models smollm2 --out /root/smollm2 | tail -1)
python3 scripts/fidelity_gpu.py run --model "$model" --out "$OUT" 2>&1 | grep -v "it/s\]" | tail -40
