#!/usr/bin/env bash
# On the GPU machine: kernel GPU tests (and tests/test_kernels.py natively), the host-time
# profile, then the kernel benchmark with its per-kernel profile; results under $OUT.
# Usage: GIT_REV=<rev> [SWEEP=1] bash scripts/gpu_kernels.sh   (SWEEP: also the attention
# launch sweep and scripts/bench_search.py's probe sweep; tests run from tests/ so that the
# installed package, not the source folder, is imported)
source scripts/gpu_setup.sh
(cd tests && python3 -m pytest -q -m gpu test_kernels_gpu.py 2>&1 | tee "$OUT/gpu_kernel_tests.log" | tail -5)
(cd tests && python3 -m pytest -q test_kernels.py 2>&1 | tee "$OUT/native_kernel_tests.log" | tail -5)
python3 scripts/profile_host.py --out "$OUT/host" 2>&1 | grep tokens
python3 scripts/bench_kernels.py --out "$OUT" --profile ${SWEEP:+--sweep} 2>&1 | tee "$OUT/bench_kernels.log" | tail -30
if [ -n "$SWEEP" ]; then
  python3 scripts/bench_search.py --out "$OUT/search" 2>&1 | tee "$OUT/bench_search.log" | tail -30
fi
