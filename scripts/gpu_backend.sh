#!/usr/bin/env bash
# On the GPU machine: the backend's GPU test (a 16-prompt batch through FLEXPREFILL and
# FLASH_ATTN engines); results under $OUT. Serving checks: scripts/gpu_serve_smollm2.sh.
source scripts/gpu_setup.sh
(cd tests && python3 -m pytest -q -m gpu test_backend_gpu.py 2>&1 | tee "$OUT/gpu_backend_tests.log" | tail -15)
