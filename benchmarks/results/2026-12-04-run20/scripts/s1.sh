# the scores pass on Hopper: its GPU tests, then the A/B
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short -x test_hopper_probe_gpu.py > $OUT/probe_tests.log 2>&1; echo rc=$?; tail -15 $OUT/probe_tests.log | cut -c1-400
cd /tmp && timeout 300 python3 $R/.device/session/scores_ab.py $OUT/scores-ab > $OUT/scores-ab.log 2>&1; echo rc=$?; grep -v "^{" $OUT/scores-ab.log | tail -5 | cut -c1-300; cut -c1-600 $OUT/scores-ab.log | grep "^{"
