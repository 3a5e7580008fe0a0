#!/usr/bin/env bash
# On the GPU machine: kernel GPU tests, then the kernel benchmark; results under $OUT.
# Usage: GIT_REV=<rev> bash scripts/gpu_kernels.sh
source scripts/gpu_setup.sh
set -o pipefail
python3 -m pytest -q -m gpu tests/test_kernels_gpu.py 2>&1 | tee "$OUT/gpu_kernel_tests.log" | tail -25
python3 -m pytest -q -x tests/test_kernels.py 2>&1 | tee "$OUT/kernel_tests_native.log" | tail -5
python3 scripts/bench_kernels.py --out "$OUT" --sweep 2>&1 | tee "$OUT/bench_kernels.log" | tail -40
