#!/usr/bin/env bash
# Run 45's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   tests-all, bench, breakeven-NAME, e2e-LENGTH-BUDGETS  as run 44's gpu44.sh
#   tests-rerank  `pytest test_kernels.py -k "rerank or threshold"` natively (the
#              installed wheel; the kernels this session rebuilt), before `tests-all`
#              where time is short
#   bounds     rerank's search kernels profiled at 128K (run 38's mass_knockout.py: the
#              planted layer, 64-token blocks, head-wide γ 0.938, five searches): the
#              installed package (the head-wide bound over programs of 64 rows, 136ac30;
#              the candidate thresholds by radix select, 572d4c7) beside
#              .device/session/variants/before/kernels (b569724's kernels/: one program
#              a head, a second bisection) and mass-warps1, mass-warps2 (471d2d7's
#              kernels/ with the sampled-mass kernel on 1 or 2 warps instead of 4; run
#              38 measured 2 warps 6% faster before the chunked walk), each kernel's
#              GPU ms
# Usage: bash benchmarks/results/2026-12-07-run45/scripts/gpu45.sh PART [...]
export R=$PWD
results=$R/benchmarks/results
for part in "$@"; do
  case $part in
  bounds)
    V=$R/.device/session/variants
    (source scripts/gpu_setup.sh > /dev/null
     GIT_REV=$(cat .device/session/rev) PYTHONPATH="$R/scripts:$PYTHONPATH" \
       bash -c "cd /tmp && timeout 300 python3 '$results/2026-12-06-run38/scripts/mass_knockout.py' \
           '$OUT/bounds' before='$V/before/kernels' warps1='$V/mass-warps1/kernels' \
           warps2='$V/mass-warps2/kernels'" 2>&1 \
       | grep -v Warning | tee "$OUT/bounds.log" | cut -c1-900 | tail -n 4) ;;
  tests-rerank)
    (source scripts/gpu_setup.sh > /dev/null
     cd tests && timeout 240 python3 -m pytest -q -p no:cacheprovider test_kernels.py \
         -k "rerank or threshold" 2>&1 | tee "$OUT/tests_rerank.log" | tail -n 5) ;;
  *) bash "$results/2026-12-06-run44/scripts/gpu44.sh" "$part" ;;
  esac
done
