export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/scripts && timeout 320 python3 search_ab.py --out $OUT/search-ab grid=$R/.device/session/variants/grid/kernels thresholds=$R/.device/session/variants/thresholds/kernels > $OUT/search-ab.log 2>&1; echo rc=$?
grep -v "^{" $OUT/search-ab.log | tail -40 | cut -c1-250
cd $R/scripts && timeout 200 python3 bench_kernels.py --lengths 131072 --gammas 0.9 --out $OUT/kernels > $OUT/kernels.log 2>&1; echo rc=$?; grep "^|" $OUT/kernels.log | cut -c1-220
