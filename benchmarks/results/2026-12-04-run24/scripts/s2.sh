export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 240 python3 $R/.device/session/hv/hopper_ab_L.py $OUT/hopper-ab-L > $OUT/hopper-ab-L.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-ab-L.log | cut -c1-300; tail -2 $OUT/hopper-ab-L.log | cut -c1-300
cd $R/scripts && timeout 300 python3 bench_kernels.py --lengths 32768 131072 --gammas 0.9 0.95 --vsgrid-gammas 0.96 --out $OUT/kernels > $OUT/kernels.log 2>&1; echo rc=$?; grep "^|" $OUT/kernels.log | cut -c1-220
