#!/usr/bin/env bash
# On the GPU machine: the backend's GPU test (16-prompt batch vs FLASH_ATTN) and the
# concurrent-requests serving check on the dummy 8B model; results under $OUT.
source scripts/gpu_setup.sh
(cd tests && python3 -m pytest -q -m gpu test_backend_gpu.py 2>&1 | tee "$OUT/gpu_backend_tests.log" | tail -15)
python3 scripts/check_serving.py dummy8b --out "$OUT" 2>&1 | tail -30
