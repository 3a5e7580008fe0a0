#!/usr/bin/env bash
# Run 46's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   bench      scripts/bench_kernels.py at 32K and 128K (γ 0.9 / 0.95, contiguous and
#              128-/16-token pages, FA3 dense in the same run, profiled), with a rerank
#              row as the README ships it (64-token blocks, head-wide, γ 0.95) beside
#              the paper's and vsgrid's: issue 13's table, and issue 14's "both modes"
#   anything else: run 45's gpu45.sh PART (tests-all, breakeven-NAME, e2e-..., bounds)
# Usage: bash benchmarks/results/2026-12-07-run46/scripts/gpu46.sh PART [...]
export R=$PWD
results=$R/benchmarks/results
for part in "$@"; do
  case $part in
  bench)
    (source scripts/gpu_setup.sh > /dev/null
     GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
       bash -c "cd /tmp && timeout 540 python3 '$R/scripts/bench_kernels.py' \
           --lengths 32768 131072 --gammas 0.9 0.95 --rerank-gammas 0.95 \
           --rerank-block-size 64 --rerank-budget head --profile --out '$OUT/kernels'" \
       2>&1 | tee "$OUT/kernels.log" | grep -v Warning | tail -n 40) ;;
  *) bash "$results/2026-12-07-run45/scripts/gpu45.sh" "$part" ;;
  esac
done
