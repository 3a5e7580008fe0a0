# pytest -m gpu as one command
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 580 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short > $OUT/gpu_tests.log 2>&1; echo rc=$?; tail -6 $OUT/gpu_tests.log | cut -c1-400
