#!/usr/bin/env bash
# On the GPU machine: kernel GPU tests, the interpreter-suite natively, then the kernel
# benchmark (with per-kernel profile and launch sweep); results under $OUT.
# Usage: GIT_REV=<rev> bash scripts/gpu_kernels.sh   (tests run from tests/ so that the
# installed package, not the source folder, is imported)
source scripts/gpu_setup.sh
(cd tests && python3 -m pytest -q -m gpu test_kernels_gpu.py 2>&1 | tee "$OUT/gpu_kernel_tests.log" | tail -15)
(cd tests && python3 -m pytest -q -x test_kernels.py 2>&1 | tee "$OUT/kernel_tests_native.log" | tail -4)
python3 scripts/bench_kernels.py --out "$OUT" --sweep --profile 2>&1 | tee "$OUT/bench_kernels.log" | tail -60
