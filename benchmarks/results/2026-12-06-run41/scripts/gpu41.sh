#!/usr/bin/env bash
# Run 41's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   ab          run 40's prepared attention-loop variants (VARIANTS, default
#               "tensor-sums counters") against the installed kernel: gpu40.sh ab
#   tests-rest  `pytest -m gpu` but the backend file, editable install from the root
#   tests-backend  `pytest -m gpu tests/test_backend_gpu.py`
#   tests-kernels  `pytest -m gpu` of the files whose code changed since run 39's full run:
#               tests/test_kernels_gpu.py, tests/test_hopper_probe_gpu.py
#   bench       scripts/bench_kernels.py at 32K and 128K with FA3 dense (gpu40.sh bench)
# Each pytest line is stamped with the seconds since the start.
# Usage: bash benchmarks/results/2026-12-06-run41/scripts/gpu41.sh PART [...]
export R=$PWD
run40="$R/benchmarks/results/2026-12-06-run40/scripts/gpu40.sh"
gpu_tests() {  # LABEL LIMIT PYTEST-SELECTION...
  local label=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  timeout "$limit" python3 -m pytest -m gpu -v -p no:cacheprovider --durations=0 "$@" 2>&1 \
      | while IFS= read -r line; do printf '%4d %s\n' $(($(date +%s) - start)) "$line"; done \
      | tee "$OUT/pytest_gpu_$label.log" | grep -v " PASSED" | tail -n 30
}
for part in "$@"; do
  case $part in
  ab) VARIANTS="${VARIANTS:-tensor-sums counters}" bash "$run40" ab ;;
  bench) bash "$run40" bench ;;
  tests-*)
    (GIT_REV=$(cat .device/session/rev); export GIT_REV; source scripts/gpu_setup.sh
     python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/editable.log" 2>&1 \
         || echo "editable install failed: see editable.log"
     case $part in
     tests-backend) gpu_tests backend 570 tests/test_backend_gpu.py ;;
     tests-kernels) gpu_tests kernels 570 tests/test_kernels_gpu.py tests/test_hopper_probe_gpu.py ;;
     tests-rest) gpu_tests rest 570 --deselect tests/test_backend_gpu.py ;;
     esac) ;;
  esac
done
