#!/usr/bin/env bash
# Run 31's second check (~6 minutes after the stages), prepared for the next lending: the GPU
# tests of this session's changes (the sparse path's no-synchronisation test for paper,
# vsgrid and rerank with a step's tables built inside the check; vLLM's profiling pass
# peaking at the step scratch), then the KV cache a FLASH_ATTN and a FLEXPREFILL engine
# get (kv_capacity.py: they should differ by the scratch FLEXPREFILL logs, once).
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
# then the KV cache each backend's engine gets (one engine per process)
for backend in FLASH_ATTN FLEXPREFILL; do
    (cd /tmp && PYTHONPATH="$R/scripts:$PYTHONPATH" timeout 240 python3 \
        "$R/benchmarks/results/2026-12-05-run31/scripts/kv_capacity.py" \
        "$OUT/kv_capacity.jsonl" "$backend" 2>&1 | tee "$OUT/kv_capacity_$backend.log" \
        | grep -E "prefill scratch|num_gpu_blocks|KV cache|Error" | tail -n 6)
done
