#!/usr/bin/env bash
# Run 44's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   tests-all      `pytest -m gpu`, the whole GPU suite as one command (editable install)
#   tests-backend  `pytest -m gpu tests/test_backend_gpu.py` (gpu41.sh tests-backend)
#   tests-rest     `pytest -m gpu` but the backend file (gpu41.sh tests-rest)
#   breakeven-fp8  bench_breakeven.py with an fp8 cache (gpu43.sh breakeven-fp8)
#   breakeven-NAME bench_breakeven.py --config of NAME: rerank64 (selection rerank,
#                  rerank_budget head, 64-token blocks: README's rerank settings),
#                  rerank128 (rerank per row, 128-token blocks), paper64 (the paper's
#                  selection at 64-token blocks); breakeven-fp8-NAME the same with an
#                  fp8 cache (added in run 48)
#   e2e-LENGTH-BUDGETS  the break-even end to end: scripts/bench_e2e.py run at one prompt
#              LENGTH, FLASH_ATTN once on 16- and 128-token pages, then the capped engine
#              (tau 0, max_density 1) at each max_budget of the comma-separated BUDGETS
#              (tokens), with its density
#   bench      scripts/bench_kernels.py at 32K and 128K with FA3 dense (gpu42.sh bench)
# Usage: bash benchmarks/results/2026-12-06-run44/scripts/gpu44.sh PART [...]
export R=$PWD
results=$R/benchmarks/results
for part in "$@"; do
  case $part in
  tests-all)
    (source scripts/gpu_setup.sh > /dev/null
     python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/editable.log" 2>&1 \
         || echo "editable install failed: see editable.log"
     start=$(date +%s)
     timeout 575 python3 -m pytest -m gpu -v -p no:cacheprovider --durations=0 2>&1 \
         | while IFS= read -r line; do printf '%4d %s\n' $(($(date +%s) - start)) "$line"; done \
         | tee "$OUT/pytest_gpu_all.log" | grep -v " PASSED" | tail -n 25) ;;
  tests-*) bash "$results/2026-12-06-run41/scripts/gpu41.sh" "$part" ;;
  breakeven-fp8) bash "$results/2026-12-06-run43/scripts/gpu43.sh" breakeven-fp8 ;;
  breakeven-*)
    name=${part#breakeven-}
    dtype=auto
    case $name in fp8-*) dtype=fp8; name=${name#fp8-} ;; esac
    case $name in
    rerank64) spec='selection="rerank",rerank_budget="head",block_size=64' ;;
    rerank128) spec='selection="rerank"' ;;
    paper64) spec='block_size=64' ;;
    *) echo "unknown $part"; continue ;;
    esac
    (source scripts/gpu_setup.sh > /dev/null
     GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
       bash -c "cd /tmp && timeout 560 python3 '$R/scripts/bench_breakeven.py' --config '$spec' --kv-cache-dtype $dtype --out '$OUT/$part'" \
       2>&1 | tee "$OUT/$part.log" | grep -v Warning | tail -n 30) ;;
  bench) bash "$results/2026-12-06-run42/scripts/gpu42.sh" bench ;;
  e2e-*)
    (GIT_REV=$(cat .device/session/rev); export GIT_REV; source scripts/gpu_setup.sh > /dev/null
     spec=${part#e2e-}
     length=${spec%%-*}
     budgets=${spec#*-}
     engines="dense dense128"
     for budget in ${budgets//,/ }; do
       name=e2e-$length-$budget
       (cd /tmp && timeout 300 python3 "$R/scripts/bench_e2e.py" run \
           --engines $engines capped --lengths "$length" --capped-budget "$budget" \
           --capped-max-density 1 --out "$OUT/$name" > "$OUT/$name.log" 2>&1; echo "$name rc $?")
       grep -E "^\| " "$OUT/$name/bench_e2e.md" 2>/dev/null | tail -n 2
       engines=""
     done) ;;
  esac
done
