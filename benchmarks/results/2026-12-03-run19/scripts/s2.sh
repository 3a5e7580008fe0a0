# the Hopper candidates: their GPU tests, then the A/B
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_hopper_attention_gpu.py > $OUT/hopper_tests.log 2>&1; echo rc=$?; tail -4 $OUT/hopper_tests.log | cut -c1-300
cd /tmp && timeout 300 python3 $R/.device/session/hopper_ab5.py $OUT/hopper-ab5 > $OUT/hopper-ab5.log 2>&1; echo rc=$?; grep "^('" $OUT/hopper-ab5.log; tail -3 $OUT/hopper-ab5.log | cut -c1-300
