#!/usr/bin/env bash
# Run 34's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried; run 33's A/B scripts reused). PART:
#   sqq    branch second-quad-queries (combined-33 without the late P V wait) in SM
#          cycles against main's kernel and its parts (cycles_ab.py), timed against
#          main's twice (attention_ab.py), then its wheel's test_hopper_attention_gpu.py
#          (kernel copy: git archive second-quad-queries kernels | tar -x -C
#          .device/session/sqq; wheel: pip wheel on its git archive, in whl-sqq)
#   fqq    branch first-quad-queries (main's kernel with the diagonal tile first) and
#          main's ping-pong launch in SM cycles against main's kernel (cycles_ab.py;
#          copy: git archive first-quad-queries kernels | tar -x -C .device/session/fqq);
#          then, on an H200 only, the kernel benchmark at main
#   leads  prepared for the next lending (not run in run 34): branches group-heads
#          (48aeea9: a KV head's query heads side by side at each query block),
#          loader-ahead (cdf62bb: each block's number read one block ahead, each page once for
#          K and V) and both (group-heads-loader-ahead, dc044ae) in SM cycles against main's,
#          contiguous, 128- and 16-token pages (copies: git archive BRANCH kernels |
#          tar -x -C .device/session/gh, la, ghla)
#   phases main's kernel, the three leads and heavy-first (dc153c9: each head's query
#          blocks launched longest first, so the kernel ends on short programs) split
#          into phases in SM cycles (phases_run.py: eight marks a consumer, the loop's
#          cycles a tile, a program's fixed cost; the SMs' idle head, gaps and tail),
#          contiguous and 128-token pages
#   pers   branch hopper-persistent (6a7179c: one program an SM, items claimed from an
#          atomic counter, the next item's first tiles and queries under this one's
#          tail; not run before) in SM cycles (persistent_cycles.py) and in time
#          (attention_ab.py), then its wheel's test_hopper_attention_gpu.py (copy:
#          git archive hopper-persistent kernels | tar -x -C .device/session/pers;
#          wheel: pip wheel on its git archive, in whl-pers). A hang shows as the
#          timeouts' exit status 124.
#   bench  the wheel in .device/session/whl-$WHEEL (default: main's, .whl):
#          test_kernels_gpu.py and test_hopper_attention_gpu.py, then the kernel
#          benchmark, 32K and 128K, paper γ 0.9 / 0.95, FA3 dense in the same run
# Usage: [WHEEL=sqq] bash benchmarks/results/2026-12-05-run34/scripts/gpu34.sh PART [...]
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
S33="$R/benchmarks/results/2026-12-05-run33/scripts"
export PYTHONPATH="$R/scripts:$S33:$PYTHONPATH"
source scripts/gpu_setup.sh
D="$R/.device/session"
for part in "$@"; do
  case $part in
  sqq)
    (cd /tmp && PAGES="0 128" timeout 200 python3 "$S33/cycles_ab.py" "$OUT/cycles" \
        sqq="$D/sqq/kernels" diag="$D/diag/kernels" second="$D/second/kernels" \
        quad="$D/quad/kernels" queries="$D/qcons/kernels" combined="$D/comb/kernels" \
        2>&1 | tee "$OUT/cycles.log" | tail -n 4)
    for i in 1 2; do
      (cd /tmp && timeout 150 python3 "$S33/attention_ab.py" "$OUT/ab-sqq-$i" \
          sqq="$D/sqq/kernels" combined="$D/comb/kernels" \
          2>&1 | tee "$OUT/ab-sqq-$i.log" | tail -n 6)
    done
    python3 -m pip install -q --no-deps --no-index --force-reinstall "$D"/whl-sqq/*.whl
    (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider \
        test_hopper_attention_gpu.py 2>&1 | tee "$OUT/sqq_tests.log" | tail -n 4)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  fqq)
    (cd /tmp && PAGES="0 128" timeout 120 python3 "$S33/cycles_ab.py" "$OUT/cycles-fqq" \
        fqq="$D/fqq/kernels" ping_pong=installed,ping_pong \
        2>&1 | tee "$OUT/cycles-fqq.log" | tail -n 4)
    if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
      (cd /tmp && timeout 200 python3 "$R/scripts/bench_kernels.py" --lengths 32768 131072 \
          --gammas 0.9 0.95 --profile --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log" \
          | grep -v Warning | tail -n 14)
    fi ;;
  leads)
    (cd /tmp && PAGES="0 128 16" timeout 240 python3 "$S33/cycles_ab.py" "$OUT/cycles-leads" \
        group_heads="$D/gh/kernels" loader_ahead="$D/la/kernels" both="$D/ghla/kernels" \
        2>&1 | tee "$OUT/cycles-leads.log" | tail -n 6) ;;
  phases)
    (cd /tmp && PYTHONPATH="$R/benchmarks/results/2026-12-05-run34/scripts:$PYTHONPATH" \
        PAGES="0 128" timeout 280 python3 \
        "$R/benchmarks/results/2026-12-05-run34/scripts/phases_run.py" "$OUT/phases" \
        group_heads="$D/gh/kernels" loader_ahead="$D/la/kernels" both="$D/ghla/kernels" \
        heavy_first="$D/hf/kernels" 2>&1 | tee "$OUT/phases.log" | tail -n 4) ;;
  pers)
    (cd /tmp && PYTHONPATH="$R/benchmarks/results/2026-12-05-run34/scripts:$PYTHONPATH" \
        PAGES="0 128 16" timeout 150 python3 \
        "$R/benchmarks/results/2026-12-05-run34/scripts/persistent_cycles.py" \
        "$OUT/cycles-pers" "$D/pers/kernels" > "$OUT/cycles-pers.log" 2>&1)
    status=$?
    tail -n 6 "$OUT/cycles-pers.log"
    if [ "$status" != 0 ]; then echo "persistent_cycles.py exit $status: the rest skipped"; continue; fi
    (cd /tmp && timeout 150 python3 "$S33/attention_ab.py" "$OUT/ab-pers" \
        persistent="$D/pers/kernels" 2>&1 | tee "$OUT/ab-pers.log" | tail -n 6)
    python3 -m pip install -q --no-deps --no-index --force-reinstall "$D"/whl-pers/*.whl
    (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider -x \
        test_hopper_attention_gpu.py 2>&1 | tee "$OUT/pers_tests.log" | tail -n 4)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  bench)
    [ -n "$WHEEL" ] && python3 -m pip install -q --no-deps --no-index --force-reinstall "$D"/whl-$WHEEL/*.whl
    (cd tests && timeout 200 python3 -m pytest -q -p no:cacheprovider \
        test_kernels_gpu.py test_hopper_attention_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -n 4)
    (cd /tmp && timeout 330 python3 "$R/scripts/bench_kernels.py" --lengths 32768 131072 \
        --gammas 0.9 0.95 --profile --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log" \
        | grep -v Warning | tail -n 24) ;;
  esac
done
