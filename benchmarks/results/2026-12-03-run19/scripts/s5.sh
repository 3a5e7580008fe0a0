# FA3's overlap: the Hopper GPU tests on the branch's wheel, then the interleaved A/B
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_hopper_attention_gpu.py > $OUT/hopper_tests.log 2>&1; echo rc=$?; tail -4 $OUT/hopper_tests.log | cut -c1-300
cd /tmp && timeout 300 python3 $R/.device/session/hopper_ab6.py $OUT/hopper-ab6 > $OUT/hopper-ab6.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-ab6.log | cut -c1-330; tail -3 $OUT/hopper-ab6.log | cut -c1-300
