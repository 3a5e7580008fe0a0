#!/usr/bin/env bash
# The next lending's first measuring call, after the three vLLM bundle stages (carry .whl and
# .device/session with the revision in .device/session/rev): FA3 on our block lists
# (fa3_lists_ab.py, every variant beside the Gluon kernel), then the Hopper kernels' GPU tests
# (run 25 moved their shared parts into kernels/hopper_common.py). Results under $OUT.
# Usage (repository root on the GPU machine): bash benchmarks/results/2026-12-04-run25/scripts/next_gpu.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd /tmp && timeout 300 python3 "$R/benchmarks/results/2026-12-04-run25/scripts/fa3_lists_ab.py" \
    "$OUT/fa3-lists" 2>&1 | tee "$OUT/fa3-lists.log" | grep -v '^\s*$' | tail -n 40)
(cd tests && timeout 270 python3 -m pytest -q -m gpu test_hopper_attention_gpu.py \
    test_hopper_probe_gpu.py test_kernels_gpu.py 2>&1 | tee "$OUT/gpu_tests_kernels.log" | tail -n 5)
