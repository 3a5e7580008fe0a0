#!/usr/bin/env bash
# Run 32's kernel check: the peeled Gluon attention kernel against 37abc39's (A/B, outputs
# compared), then its GPU tests against the reference.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run32/scripts/gpu_peel.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd /tmp && timeout 150 python3 "$R/benchmarks/results/2026-12-05-run32/scripts/hopper_ab_peel.py" \
    "$OUT/ab-peel" 2>&1 | tee "$OUT/ab_peel.log" | grep -v Warning | tail -n 6)
(cd tests && timeout 100 python3 -m pytest -q -p no:cacheprovider test_hopper_attention_gpu.py \
    2>&1 | tee "$OUT/hopper_tests.log" | tail -n 4)
