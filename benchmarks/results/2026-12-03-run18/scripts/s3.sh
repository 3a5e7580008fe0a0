# 256K capped end to end, then the kernel rows at 32K and 128K
R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 280 python3 $R/scripts/bench_e2e.py run --no-density --engines capped --lengths 262080 --out $OUT/e2e256-capped > $OUT/e2e256-capped.log 2>&1; echo rc=$?; tail -6 $OUT/e2e256-capped.log | cut -c1-300
cd /tmp && timeout 250 python3 $R/scripts/bench_kernels.py --lengths 32768 131072 --gammas 0.9 0.95 --vsgrid-gammas --profile --out $OUT/kernels > $OUT/kernels.log 2>&1; echo rc=$?; grep "^| " $OUT/kernels/bench_kernels.md | head -12
