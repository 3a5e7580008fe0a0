# usage: bash s3.sh [L]  (L: the lazy-rescale branch's wheel)
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
[ "$1" = L ] && rm -rf .whl && cp -r .device/session/whlL .whl
source scripts/gpu_setup.sh
cd $R/tests && timeout 400 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short test_kernels_gpu.py test_hopper_probe_gpu.py test_hopper_attention_gpu.py > $OUT/gpu_tests_kernels.log 2>&1; echo rc=$?; tail -3 $OUT/gpu_tests_kernels.log | cut -c1-300
