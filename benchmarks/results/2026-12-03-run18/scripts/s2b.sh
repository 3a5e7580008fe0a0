R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 200 python3 $R/.device/session/hopper_ab2.py $OUT/hopper-ab2 > $OUT/hopper-ab2.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-ab2.log | cut -c1-200; tail -2 $OUT/hopper-ab2.log | cut -c1-300
