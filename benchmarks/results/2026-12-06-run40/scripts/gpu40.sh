#!/usr/bin/env bash
# Run 40's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   ab         the Hopper attention kernel with each of variants/{tree,emu,emu25}.patch
#              (apply_variant.py on a copy of the working tree's kernels/) against the
#              installed one in SM cycles a block pair (run 33's cycles_ab.py; 128K planted,
#              γ 0.9 / 0.95, contiguous and 128-/16-token pages): tree (the row maxima and
#              sums as trees within a lane), emu (tree, and half of each non-diagonal
#              tile's exponentials by a cubic on the FMA units), emu25 (a quarter)
#   test=NAME  test_hopper_attention_gpu.py with variant NAME's hopper_attention.py over the
#              installed module, then scripts/bench_kernels.py at 32K and 128K (γ 0.9 / 0.95,
#              FA3 dense in the same run), then the wheel again
#   bench      the same benchmark with the installed package
#   e2e-LENGTHS-ENGINES  scripts/bench_e2e.py run --no-density (the installed package, from
#              /tmp), e.g. e2e-262080-dense, e2e-8192,131072-dense,capped
# Usage: bash benchmarks/results/2026-12-06-run40/scripts/gpu40.sh PART [...]
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
S="$R/benchmarks/results/2026-12-06-run40/scripts"
export PYTHONPATH="$R/scripts:$R/benchmarks/results/2026-12-05-run33/scripts:$PYTHONPATH"
source scripts/gpu_setup.sh
variant() {  # NAME -> a copy of kernels/ with variants/NAME.patch applied
  python3 "$R/benchmarks/results/2026-12-06-run39/scripts/apply_variant.py" "$R/kernels" \
      "$S/variants/$1.patch" "$R/.device/session/variants/$1" > /dev/null
  echo "$R/.device/session/variants/$1/kernels"
}
bench() {  # LABEL
  (cd /tmp && timeout 300 python3 "$R/scripts/bench_kernels.py" --lengths 32768 131072 \
      --gammas 0.9 0.95 --profile --out "$OUT/kernels-$1" 2>&1 \
      | tee "$OUT/kernels-$1.log" | grep -v Warning | tail -n 12)
}
for part in "$@"; do
  case $part in
  ab)
    versions=()
    for name in ${VARIANTS:-tree emu emu25}; do versions+=("$name=$(variant "$name")"); done
    (cd /tmp && PAGES="${PAGES:-0 128 16}" timeout 400 python3 \
        "$R/benchmarks/results/2026-12-05-run33/scripts/cycles_ab.py" "$OUT/cycles" \
        "${versions[@]}" 2>&1 | tee "$OUT/cycles.log" | grep '"gamma"' | cut -c1-700) ;;
  test=*)
    name=${part#test=}
    G=$(variant "$name")
    K=$(cd /tmp && python3 -c "import vllm_flexprefill.kernels as k, os; print(os.path.dirname(k.__file__))" 2>/dev/null | tail -1)
    case "$K" in "$R"/*) echo "an editable install: reinstall the wheel first"; continue ;; esac
    cp "$G/hopper_attention.py" "$K/hopper_attention.py"
    (cd tests && timeout 240 python3 -m pytest -q -p no:cacheprovider test_hopper_attention_gpu.py \
        2>&1 | tee "$OUT/tests-$name.log" | tail -n 3)
    bench "$name"
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  bench) bench installed ;;
  e2e-*)
    spec=${part#e2e-}
    lengths=${spec%-*}
    engines=${spec##*-}
    (cd /tmp && timeout 560 python3 "$R/scripts/bench_e2e.py" run --no-density \
        --engines ${engines//,/ } --lengths ${lengths//,/ } --out "$OUT/${part//,/_}" \
        > "$OUT/${part//,/_}.log" 2>&1; echo "rc $?")
    grep -v "it/s\]" "$OUT/${part//,/_}.log" | grep -iE "ttft|decode|speed|x |error" | tail -n 20 ;;
  esac
done
