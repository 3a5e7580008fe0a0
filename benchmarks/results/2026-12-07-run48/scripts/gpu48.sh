#!/usr/bin/env bash
# Run 48's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   e2e-LENGTH-BUDGETS  the break-even end to end as run 44's part, each engine set under
#              its own `timeout 300`: FLASH_ATTN on 16- and 128-token pages first, then the
#              capped engine (tau 0, max_density 1) at each max_budget of the
#              comma-separated BUDGETS (run 48's first budget with the FLASH_ATTN engines
#              in one timeout ran past it)
#   anything else: run 46's gpu46.sh PART (bench, tests-all, breakeven-NAME, and
#              breakeven-fp8-NAME: run 44's part, with an fp8 cache since run 48)
# Usage: bash benchmarks/results/2026-12-07-run48/scripts/gpu48.sh PART [...]
export R=$PWD
results=$R/benchmarks/results
for part in "$@"; do
  case $part in
  e2e-*)
    (GIT_REV=$(cat .device/session/rev); export GIT_REV; source scripts/gpu_setup.sh > /dev/null
     spec=${part#e2e-}
     length=${spec%%-*}
     budgets=${spec#*-}
     for run in dense ${budgets//,/ }; do
       name=e2e-$length-$run
       if [ "$run" = dense ]; then options=(--engines dense dense128)
       else options=(--engines capped --capped-budget "$run" --capped-max-density 1); fi
       (cd /tmp && timeout 300 python3 "$R/scripts/bench_e2e.py" run "${options[@]}" \
           --lengths "$length" --out "$OUT/$name" > "$OUT/$name.log" 2>&1; echo "$name rc $?")
       grep -E "^\| " "$OUT/$name/bench_e2e.md" 2>/dev/null | tail -n 2
     done) ;;
  *) bash "$results/2026-12-07-run46/scripts/gpu46.sh" "$part" ;;
  esac
done
