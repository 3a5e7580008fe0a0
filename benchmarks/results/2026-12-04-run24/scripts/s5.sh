export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/scripts && timeout 420 python3 bench_kernels.py --lengths 32768 131072 --gammas 0.9 0.95 --vsgrid-gammas 0.9 0.96 --out $OUT/kernels > $OUT/kernels.log 2>&1; echo rc=$?; grep "^|\|capture" $OUT/kernels.log | cut -c1-240
