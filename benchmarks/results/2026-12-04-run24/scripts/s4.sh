export R=$PWD
export GIT_REV=$(cat .device/session/rev)
[ "$1" = L ] && rm -rf .whl && cp -r .device/session/whlL .whl
source scripts/gpu_setup.sh
cd $R/tests && timeout 500 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_backend_gpu.py > $OUT/gpu_tests_backend.log 2>&1; echo rc=$?; tail -3 $OUT/gpu_tests_backend.log | cut -c1-300
