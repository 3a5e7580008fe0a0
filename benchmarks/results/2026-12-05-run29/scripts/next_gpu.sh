#!/usr/bin/env bash
# Run 29's prepared lending, one call after the vLLM stages (~6 minutes): selection: rerank
# on the GPU. Its tests against the reference at 16K + 8K-after-24K (bf16, paged), then the
# 128K kernel benchmark: the paper's γ 0.9, vsgrid γ 0.835 (the paper γ 0.9's kept mass:
# issue 14's speed criterion) and rerank at γ 0.835 and 0.9, with each search's per-kernel
# GPU times (--profile; the rerank rows' sampled masses and cut are its new cost).
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run29/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(timeout 200 python3 -m pytest -q tests/test_kernels_gpu.py -k "vsgrid_prompt" 2>&1 \
    | tee "$OUT/test_rerank_gpu.log" | tail -n 3)
(cd /tmp && timeout 380 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 --vsgrid-gammas 0.835 --rerank-gammas 0.835 0.9 --profile \
    --out "$OUT/kernels-rerank" 2>&1 | tee "$OUT/kernels-rerank.log" | tail -n 40)
