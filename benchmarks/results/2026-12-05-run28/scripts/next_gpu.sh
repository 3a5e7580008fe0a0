#!/usr/bin/env bash
# Run 28's prepared lending, one call after the vLLM stages (~4 minutes): run 27's equal-mass
# 128K row (vsgrid γ 0.835 beside the paper's γ 0.9: issue 14's speed criterion), then the
# re-rank prototype: its test in bf16 on the GPU and its cost at 128K beside the sparse
# attention it would precede (bench_rerank.py).
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run28/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
S=$R/benchmarks/results/2026-12-05-run28/scripts
(cd /tmp && timeout 240 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 --vsgrid-gammas 0.835 --out "$OUT/kernels-equal-mass" 2>&1 \
    | tee "$OUT/kernels-equal-mass.log" | tail -n 14)
(cd "$S" && timeout 120 python3 -m pytest -q test_rerank_kernel.py 2>&1 \
    | tee "$OUT/test_rerank_kernel_gpu.log" | tail -n 3)
(cd /tmp && timeout 200 python3 "$S/bench_rerank.py" --out "$OUT/rerank" 2>&1 \
    | tee "$OUT/rerank.log" | tail -n 8)
