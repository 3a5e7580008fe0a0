#!/usr/bin/env bash
# On the GPU machine: kernel GPU tests, then the kernel benchmark (with per-kernel profile
# and launch sweep); results under $OUT. (tests/test_kernels.py also runs natively on a GPU.)
# Usage: GIT_REV=<rev> bash scripts/gpu_kernels.sh   (tests run from tests/ so that the
# installed package, not the source folder, is imported)
source scripts/gpu_setup.sh
(cd tests && python3 -m pytest -q -m gpu test_kernels_gpu.py 2>&1 | tee "$OUT/gpu_kernel_tests.log" | tail -15)
python3 scripts/bench_kernels.py --out "$OUT" --sweep --profile 2>&1 | tee "$OUT/bench_kernels.log" | tail -60
