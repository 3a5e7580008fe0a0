#!/usr/bin/env bash
# On the GPU machine: the end-to-end benchmark (FLASH_ATTN vs FLEXPREFILL engines, TTFT,
# decode, and the 16-prompt mixed batch check); results under $OUT.
source scripts/gpu_setup.sh
python3 scripts/bench_e2e.py run --out "$OUT" 2>&1 | grep -v "it/s\]" | tail -40
