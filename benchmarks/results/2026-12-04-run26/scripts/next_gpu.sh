#!/usr/bin/env bash
# The next lending's second measuring call (after run 25's next_gpu.sh): the 128K kernel
# benchmark with both selections (run 26's fitted vsgrid weight: its kernel's time, vsgrid's
# density and total against the paper's in one call), then the backend's GPU tests.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-04-run26/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd /tmp && timeout 330 python3 "$R/scripts/bench_kernels.py" --lengths 131072 \
    --gammas 0.9 0.95 --vsgrid-gammas 0.85 0.9 --profile --out "$OUT/kernels" 2>&1 \
    | tee "$OUT/kernels.log" | tail -n 30)
(cd tests && timeout 250 python3 -m pytest -q -m gpu test_backend_gpu.py 2>&1 \
    | tee "$OUT/gpu_tests_backend.log" | tail -n 5)
