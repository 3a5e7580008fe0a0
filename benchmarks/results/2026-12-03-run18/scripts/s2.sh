# the persistent Gluon kernel (wheel = combo branch): its GPU tests, then A (main) / P (persistent) timed on the same selections
R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_hopper_attention_gpu.py test_kernels_gpu.py > $OUT/hopper_tests.log 2>&1; echo rc=$?; tail -6 $OUT/hopper_tests.log | cut -c1-300
cd /tmp && timeout 300 python3 $R/.device/session/hopper_ab.py $OUT/hopper-ab > $OUT/hopper-ab.log 2>&1; echo rc=$?; grep "^{" $OUT/hopper-ab.log | cut -c1-220; tail -2 $OUT/hopper-ab.log | cut -c1-300
