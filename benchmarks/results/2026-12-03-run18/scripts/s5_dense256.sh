# 256K FLASH_ATTN end to end
R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 560 python3 $R/scripts/bench_e2e.py run --no-density --engines dense --lengths 262080 --out $OUT/e2e256-dense > $OUT/e2e256-dense.log 2>&1; echo rc=$?; tail -6 $OUT/e2e256-dense.log | cut -c1-300
