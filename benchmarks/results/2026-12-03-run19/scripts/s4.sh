export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 200 python3 $R/.device/session/clocks.py $OUT/clocks > $OUT/clocks.log 2>&1; echo rc=$?; tail -40 $OUT/clocks.log | cut -c1-250
