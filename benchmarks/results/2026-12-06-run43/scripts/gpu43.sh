#!/usr/bin/env bash
# Run 43's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   breakeven  scripts/bench_breakeven.py: FA3 dense against the search (eager and its
#              GPU time) plus the Hopper and the portable attention kernels by density,
#              at 16K / 32K / 64K / 128K prompts and the last 16K chunk of 32K and 128K
#   breakeven-fp8  the same with an fp8 cache against FA3's fp8 pass (portable kernel);
#              prepared in run 43, not run there
#   tests      the kernel and Hopper attention GPU tests (editable install of the tree)
# Usage: bash benchmarks/results/2026-12-06-run43/scripts/gpu43.sh PART [...]
R=$PWD
source scripts/gpu_setup.sh
for part in "$@"; do
  case $part in
  breakeven)
    GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
      bash -c "cd /tmp && timeout 420 python3 '$R/scripts/bench_breakeven.py' --out '$OUT/breakeven'" \
      2>&1 | tee "$OUT/breakeven.log" | grep -v Warning | tail -n 40 ;;
  breakeven-fp8)
    GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
      bash -c "cd /tmp && timeout 420 python3 '$R/scripts/bench_breakeven.py' --kv-cache-dtype fp8 --out '$OUT/breakeven-fp8'" \
      2>&1 | tee "$OUT/breakeven-fp8.log" | grep -v Warning | tail -n 30 ;;
  tests)
    python3 -m pip install -q --no-deps --no-build-isolation -e . > /dev/null 2>&1
    timeout 280 python3 -m pytest -m gpu -q -p no:cacheprovider -x \
      tests/test_kernels_gpu.py tests/test_hopper_attention_gpu.py 2>&1 | tail -n 5 \
      | tee "$OUT/tests.log" ;;
  esac
done
