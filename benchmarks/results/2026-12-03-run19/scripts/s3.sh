export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 400 python3 $R/.device/session/hopper_bound.py $OUT/hopper-bound > $OUT/hopper-bound.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-bound.log | cut -c1-220; tail -3 $OUT/hopper-bound.log | cut -c1-300
