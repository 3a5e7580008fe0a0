#!/usr/bin/env bash
# Run 38's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried; run 33's A/B scripts reused). PART:
#   tests  test_hopper_attention_gpu.py: the Gluon kernel with its output stored by bulk
#          copies (TMA) where the rows are whole, from registers elsewhere (float32 and
#          strided outputs: every row from registers)
#   ab     the bulk-store kernel (installed) against main's before it (copy: git archive
#          5155eba kernels | tar -x -C .device/session/main) in SM cycles (cycles_ab.py;
#          128K planted layer, γ 0.9 / 0.95, contiguous and 128-/16-token pages), then
#          timed interleaved twice (attention_ab.py)
#   bench  the kernel benchmark, 32K and 128K, paper γ 0.9 / 0.95, FA3 dense in the same
#          run, profiled
#   hoist  the loader's first two block numbers read in the program's prologue, beside
#          the request's fields, the first two tiles issued before the loop (copy in
#          .device/session/hoist/kernels) against the installed kernel in SM cycles
#          (cycles_ab.py), timed as the serving path launches it twice
#          (attention_ab_serving.py), then test_hopper_attention_gpu.py on it (the
#          copy's hopper_attention.py over the installed one's, then the wheel again)
#   knock  what bounds rerank's sampled-mass kernel: knock-out copies (mass_variants.py
#          kernels .device/session/knock: $VARIANTS, default sametile nodot noexp)
#          profiled beside the installed search (mass_knockout.py; 128K, 64-token
#          blocks, head-wide γ 0.938)
#   rerank the rerank kernels' tests (test_kernels.py -k rerank: the cut by the radix
#          select against the reference), then the kernel benchmark with rerank rows at
#          64-token blocks, γ 0.938, head-wide budget (32K and 128K) and per row (128K),
#          profiled (the bounds' kernels' times)
# Usage: [VARIANTS="..."] bash benchmarks/results/2026-12-06-run38/scripts/gpu38.sh PART [...]
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
S33="$R/benchmarks/results/2026-12-05-run33/scripts"
export PYTHONPATH="$R/scripts:$S33:$PYTHONPATH"
source scripts/gpu_setup.sh
D="$R/.device/session"
for part in "$@"; do
  case $part in
  tests)
    (cd tests && timeout 300 python3 -m pytest -q -p no:cacheprovider \
        test_hopper_attention_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -n 8) ;;
  ab)
    (cd /tmp && PAGES="0 128 16" timeout 240 python3 "$S33/cycles_ab.py" "$OUT/cycles" \
        main="$D/main/kernels" 2>&1 | tee "$OUT/cycles.log" | tail -n 6)
    for i in 1 2; do
      (cd /tmp && timeout 150 python3 "$S33/attention_ab.py" "$OUT/ab-$i" \
          main="$D/main/kernels" 2>&1 | tee "$OUT/ab-$i.log" | tail -n 6)
    done ;;
  bench)
    (cd /tmp && timeout 420 python3 "$R/scripts/bench_kernels.py" \
        --lengths ${LENGTHS:-32768 131072} --gammas 0.9 0.95 --profile \
        --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log" | grep -v Warning | tail -n 24) ;;
  hoist)
    (cd /tmp && PAGES="0 128 16" timeout 200 python3 "$S33/cycles_ab.py" "$OUT/cycles-hoist" \
        hoist="$D/hoist/kernels" 2>&1 | tee "$OUT/cycles-hoist.log" | tail -n 6 | cut -c1-400)
    for i in 1 2; do
      (cd /tmp && timeout 200 python3 "$R/benchmarks/results/2026-12-06-run38/scripts/attention_ab_serving.py" \
          "$OUT/serving-hoist-$i" hoist="$D/hoist/kernels" 2>&1 | tail -n 6 | cut -c1-330)
    done
    # (run 38 ran this without 2>/dev/null | tail -1: vLLM's import warning joined the
    # path, the copy failed and the tests ran main's kernel; their log was dropped)
    K=$(cd /tmp && python3 -c "import vllm_flexprefill.kernels as k, os; print(os.path.dirname(k.__file__))" 2>/dev/null | tail -1)
    cp "$D/hoist/kernels/hopper_attention.py" "$K/hopper_attention.py"
    (cd tests && timeout 200 python3 -m pytest -q -p no:cacheprovider \
        test_hopper_attention_gpu.py 2>&1 | tee "$OUT/hoist_tests.log" | tail -n 4)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  knock)
    (cd /tmp && timeout 400 python3 "$R/benchmarks/results/2026-12-06-run38/scripts/mass_knockout.py" \
        "$OUT/knock" $(for v in ${VARIANTS:-sametile nodot noexp}; do echo "$v=$D/knock/$v/kernels"; done) \
        2>&1 | grep -v Warning | tee "$OUT/knock.log" | cut -c1-300 | tail -n 10) ;;
  rerank)
    (cd tests && timeout 300 python3 -m pytest -q -p no:cacheprovider \
        test_kernels.py -k rerank 2>&1 | tee "$OUT/rerank_tests.log" | tail -n 4)
    for budget in head row; do
      lengths="32768 131072"; [ $budget = row ] && lengths=131072
      (cd /tmp && timeout 280 python3 "$R/scripts/bench_kernels.py" --lengths $lengths \
          --gammas 0.9 --vsgrid-gammas --rerank-gammas 0.938 --rerank-block-size 64 \
          --rerank-budget $budget --profile --out "$OUT/rerank-$budget" 2>&1 \
          | tee "$OUT/rerank-$budget.log" | grep -v Warning | tail -n 8)
    done ;;
  esac
done
