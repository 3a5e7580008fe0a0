#!/usr/bin/env bash
# Run 27's second lending, one call after the vLLM stages: issue 14's speed criterion at equal
# kept mass (the CPU reference puts the paper γ 0.9's mean kept mass at vsgrid γ 0.835 at
# 128K: recall/recall_128k_vsgrid.jsonl), the paper's γ 0.9 in the same call.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run27/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd /tmp && timeout 240 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 --vsgrid-gammas 0.835 --out "$OUT/kernels-equal-mass" 2>&1 \
    | tee "$OUT/kernels-equal-mass.log" | tail -n 14)
