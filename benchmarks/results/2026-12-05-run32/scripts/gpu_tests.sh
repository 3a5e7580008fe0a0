#!/usr/bin/env bash
# Run 32: `pytest -m gpu` from the repository's root (editable install, as CI installs it) in
# two device calls, since the suite needs ~770 s on a fresh machine and a call has 600:
#   bash benchmarks/results/2026-12-05-run32/scripts/gpu_tests.sh rest     # all but the backend file,
#        then the KV cache a FLASH_ATTN and a FLEXPREFILL engine get (run 31's kv_capacity.py)
#   bash benchmarks/results/2026-12-05-run32/scripts/gpu_tests.sh backend  # tests/test_backend_gpu.py
# Each line of pytest's output is stamped with the seconds since the start.
# (repository root on the GPU machine, .whl and .device/session carried)
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/editable.log" 2>&1 \
    || echo "editable install failed: see editable.log"
part=${1:?rest or backend}
if [ "$part" = backend ]; then selection=(tests/test_backend_gpu.py); limit=570
else selection=(--deselect tests/test_backend_gpu.py); limit=330
fi
start=$(date +%s)
timeout "$limit" python3 -m pytest -m gpu -v -p no:cacheprovider --durations=0 \
    "${selection[@]}" 2>&1 | while IFS= read -r line; do
        printf '%4d %s\n' $(($(date +%s) - start)) "$line"
    done | tee "$OUT/pytest_gpu_$part.log" | grep -v " PASSED" | tail -n 30
if [ "$part" = rest ]; then
    for backend in FLASH_ATTN FLEXPREFILL; do
        (cd /tmp && PYTHONPATH="$R/scripts:$PYTHONPATH" timeout 110 python3 \
            "$R/benchmarks/results/2026-12-05-run31/scripts/kv_capacity.py" \
            "$OUT/kv_capacity.jsonl" "$backend" > "$OUT/kv_capacity_$backend.log" 2>&1)
        grep -E "prefill scratch|num_gpu_blocks|GiB|Error" "$OUT/kv_capacity_$backend.log" | tail -n 5
    done
fi
