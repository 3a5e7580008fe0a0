#!/usr/bin/env bash
# Run 31's second check (a short lending): the GPU tests of this session's changes, the
# sparse path's no-synchronisation test (paper, vsgrid and rerank; a step's tables built
# inside the check) and vLLM's profiling pass peaking at the step scratch.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run31/scripts/gpu_checks.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
(cd tests && timeout "${LIMIT:-200}" python3 -m pytest -v -p no:cacheprovider \
    test_kernels_gpu.py test_backend_gpu.py \
    -k "never_synchronise_with_the_host or profiling_pass" 2>&1 \
    | tee "$OUT/gpu_checks.log" | tail -n 15)
