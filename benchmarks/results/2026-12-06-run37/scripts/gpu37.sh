#!/usr/bin/env bash
# Run 37's GPU calls (repository root on the GPU machine, after the vLLM stages and, for
# fid, SmolLM2's two wheel stages; .whl and .device/session carried). PART:
#   tests  the rerank kernels' tests on the GPU (test_kernels.py -k rerank: the
#          row-wise and head-wide cut against the reference, a mixed batch)
#   bench  the kernel benchmark at 32K and 128K, paper γ 0.9 / 0.95 with FA3 dense in the
#          same run, profiled, plus rerank on 64-token blocks of head-wide budget at
#          γ 0.938
#   fid    fidelity through vLLM: rerank on 64-token blocks of head-wide budget at γ 0.93,
#          0.938 and 0.95 beside the paper's γ 0.9 and 0.95
#          (fidelity_gpu.py --engines rerank64-head)
# Usage: [LENGTHS="131072"] [PROFILE=""] bash benchmarks/results/2026-12-06-run37/scripts/gpu37.sh PART [...]
R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
for part in "$@"; do
  case $part in
  tests)
    (cd tests && timeout 300 python3 -m pytest -q -p no:cacheprovider \
        test_kernels.py -k rerank 2>&1 | tee "$OUT/tests.log" | tail -n 8) ;;
  bench)
    (cd /tmp && timeout 420 python3 "$R/scripts/bench_kernels.py" \
        --lengths ${LENGTHS:-32768 131072} --gammas 0.9 0.95 --rerank-gammas 0.938 \
        --rerank-block-size 64 --rerank-budget head ${PROFILE---profile} \
        --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log" | grep -v Warning | tail -n 24) ;;
  fid)
    model=$(cd /tmp && python3 -m vllm_flexprefill.models smollm2 --out /root/smollm2 | tail -1)
    (cd /tmp && timeout 570 python3 "$R/scripts/fidelity_gpu.py" run --engines rerank64-head \
        --model "$model" --out "$OUT/rerank64-head" 2>&1 | grep -v "it/s\]" \
        | tee "$OUT/fid.log" | tail -n 30) ;;
  esac
done
