#!/usr/bin/env bash
# Run 30's first call after the vLLM stages (~9 minutes): selection: rerank on the GPU.
# Its tests against the reference (16K + 8K-after-24K, bf16, paged), the 128K kernel
# benchmark (paper γ 0.9, vsgrid γ 0.835 = the paper γ 0.9's kept mass, rerank γ 0.835
# and 0.9, each search profiled per kernel), then the A/B of three sampled-mass kernels
# against the package's per-head one (variants/grouped.py, ab_rerank.py; run 30 ran
# this script at b7091fe, where each variant was a module of its own):
#   grouped: one program per (KV head, query block), one pass over the union of the
#            heads' lists, a [group x 16, B] product a block of the union;
#   prefetch: grouped, the next block's key tile loaded while the products run;
#   head_products: grouped loads, one [16, B] product per head that lists the block.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   [SKIP_TESTS=1] bash benchmarks/results/2026-12-05-run30/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
V="$R/benchmarks/results/2026-12-05-run30/scripts"
# from tests/: run from the root, the source tree's vllm_flexprefill hides the installed
# package's kernels (run 30 ran this part by hand from tests/, with "or rerank")
[ -n "$SKIP_TESTS" ] || (cd tests && timeout 120 python3 -m pytest -q test_kernels_gpu.py \
    -k "vsgrid_prompt or rerank" 2>&1 | tee "$OUT/test_rerank_gpu.log" | tail -n 3)
(cd /tmp && timeout 240 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 --vsgrid-gammas 0.835 --rerank-gammas 0.835 0.9 --profile \
    --out "$OUT/kernels-rerank" 2>&1 | tee "$OUT/kernels-rerank.log" | tail -n 30)
(cd /tmp && PYTHONPATH="$R/scripts:$PYTHONPATH" timeout 170 python3 "$V/ab_rerank.py" \
    "$OUT/ab-rerank" "$V/variants/grouped.py:grouped" "$V/variants/grouped.py:prefetch" \
    "$V/variants/grouped.py:head_products" 2>&1 | tee "$OUT/ab-rerank.log" | tail -n 20)
