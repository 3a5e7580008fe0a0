R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 130 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_hopper_attention_gpu.py > $OUT/hopper_tests.log 2>&1; echo rc=$?; tail -4 $OUT/hopper_tests.log | cut -c1-300
cd /tmp && timeout 170 python3 $R/.device/session/hopper_ab3.py $OUT/hopper-ab3 > $OUT/hopper-ab3.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-ab3.log | cut -c1-130; tail -2 $OUT/hopper-ab3.log | cut -c1-300
