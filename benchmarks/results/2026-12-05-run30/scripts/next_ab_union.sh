#!/usr/bin/env bash
# Prepared in run 30 for the next lending (~2 minutes after the vLLM stages): the A/B of the
# union-list sampled-mass kernel (variants/grouped.py:union_list: the union of a KV head's
# query heads' lists written once by a small kernel, then a pipelined `for` loop over it with
# [4 x 16, 128] wgmma products; the selection unchanged) against the package's per-head one
# at 128K rerank γ 0.835 (run 30: 19.6 ms of search; the grouped `while` loop 24.2).
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run30/scripts/next_ab_union.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
V="$R/benchmarks/results/2026-12-05-run30/scripts"
(cd /tmp && PYTHONPATH="$R/scripts:$PYTHONPATH" timeout 170 python3 "$V/ab_rerank.py" \
    "$OUT/ab-rerank-union" "$V/variants/grouped.py:union_list" 2>&1 \
    | tee "$OUT/ab-rerank-union.log" | tail -n 12)
