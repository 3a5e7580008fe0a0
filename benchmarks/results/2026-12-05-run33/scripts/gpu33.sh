#!/usr/bin/env bash
# Run 33's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   bench  main's kernel benchmark, 32K and 128K, paper γ 0.9 / 0.95 (contiguous,
#          16- and 128-token pages), FA3 dense in the same run, per-kernel search profile
#   diag   branch diagonal-first's attention kernel against main's (attention_ab.py),
#          then its wheel's test_hopper_attention_gpu.py
#   probe  branch probe-peel's search against main's (scripts/search_ab.py), then its
#          wheel's test_hopper_probe_gpu.py
#   cycles the diagonal tile's three places, the quad row sums, the P V's wait after the
#          softmax (alone, with the diagonal second, with ping-pong) and main's ping-pong
#          launch, in SM cycles (cycles_ab.py; kernel copies: git archive BRANCH kernels | tar -x -C
#          .device/session/DIR for diagonal-first -> diag, diagonal-second -> second,
#          quad-row-sums -> quad, pv-wait-late -> late, pv-wait-late-second -> late2,
#          queries-in-consumers -> qcons)
#   late   pv-wait-late's, pv-wait-late-second's and combined-33's kernels timed against
#          main's (attention_ab.py), then pv-wait-late's and combined-33's wheels'
#          test_hopper_attention_gpu.py (wheels: pip wheel on git archive BRANCH, in
#          .device/session/whl-late and whl-comb; combined-33 -> comb)
# Usage: bash benchmarks/results/2026-12-05-run33/scripts/gpu33.sh PART [PART ...]
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
S="$R/benchmarks/results/2026-12-05-run33/scripts"
export PYTHONPATH="$R/scripts:$S:$PYTHONPATH"
source scripts/gpu_setup.sh
for part in "$@"; do
  case $part in
  bench)
    (cd /tmp && timeout 480 python3 "$R/scripts/bench_kernels.py" --lengths 32768 131072 \
        --gammas 0.9 0.95 --profile --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log" \
        | grep -v Warning | tail -n 24) ;;
  diag)
    (cd /tmp && timeout 200 python3 "$S/attention_ab.py" "$OUT/ab-diag" \
        diag="$R/.device/session/diag/kernels" 2>&1 | tee "$OUT/ab-diag.log" | tail -n 8)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .device/session/whl-diag/*.whl
    (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider \
        test_hopper_attention_gpu.py 2>&1 | tee "$OUT/diag_tests.log" | tail -n 4)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  probe)
    (cd /tmp && timeout 200 python3 "$R/scripts/search_ab.py" probe="$R/.device/session/probe/kernels" \
        --out "$OUT/ab-probe" --lengths 32768 131072 --pages 0 128 --selections paper 2>&1 | tee "$OUT/ab-probe.log" | tail -n 6)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .device/session/whl-probe/*.whl
    (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider \
        test_hopper_probe_gpu.py 2>&1 | tee "$OUT/probe_tests.log" | tail -n 4)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  late)
    (cd /tmp && timeout 240 python3 "$S/attention_ab.py" "$OUT/ab-late" \
        late="$R/.device/session/late/kernels" late2="$R/.device/session/late2/kernels" \
        combined="$R/.device/session/comb/kernels" \
        2>&1 | tee "$OUT/ab-late.log" | tail -n 8)
    for w in late comb; do
      python3 -m pip install -q --no-deps --no-index --force-reinstall .device/session/whl-$w/*.whl
      (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider \
          test_hopper_attention_gpu.py 2>&1 | tee "$OUT/${w}_tests.log" | tail -n 4)
    done
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  cycles)
    (cd /tmp && PAGES="0 128" timeout 420 python3 "$S/cycles_ab.py" "$OUT/cycles" \
        diag="$R/.device/session/diag/kernels" second="$R/.device/session/second/kernels" \
        quad="$R/.device/session/quad/kernels" late="$R/.device/session/late/kernels" \
        late2="$R/.device/session/late2/kernels" ping_pong=installed,ping_pong \
        late_ping_pong="$R/.device/session/late/kernels,ping_pong" \
        queries="$R/.device/session/qcons/kernels" combined="$R/.device/session/comb/kernels" 2>&1 | tee "$OUT/cycles.log" | tail -n 8) ;;
  esac
done
