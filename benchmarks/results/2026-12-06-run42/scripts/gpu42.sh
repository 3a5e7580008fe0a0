#!/usr/bin/env bash
# Run 42's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   bench      scripts/bench_kernels.py at 32K and 128K, γ 0.9 / 0.95, FA3 dense in the
#              same run (run 40's `gpu40.sh bench`)
#   breakeven  scripts/bench_breakeven.py: the sparse path against FA3 dense by selected
#              density, at 32K / 128K prompts and their last 16K chunk
# Usage: bash benchmarks/results/2026-12-06-run42/scripts/gpu42.sh PART [...]
R=$PWD
for part in "$@"; do
  case $part in
  bench) bash "$R/benchmarks/results/2026-12-06-run40/scripts/gpu40.sh" bench ;;
  breakeven)
    source scripts/gpu_setup.sh
    GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
      bash -c "cd /tmp && timeout 500 python3 '$R/scripts/bench_breakeven.py' --out '$OUT/breakeven'" \
      2>&1 | tee "$OUT/breakeven.log" | grep -v Warning | tail -n 30 ;;
  esac
done
