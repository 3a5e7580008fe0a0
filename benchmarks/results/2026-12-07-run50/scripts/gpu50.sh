#!/usr/bin/env bash
# Run 50's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried): each PART as run 48's gpu48.sh runs it (bench, tests-all,
# tests-backend, tests-rest, breakeven-NAME, breakeven-fp8-NAME, e2e-LENGTH-BUDGETS),
# its files written to a scratch folder and packed into one $OUT/PART.tar.gz: the device
# tool brings back at most 8 files, which run 50's e2e part exceeded (its FLASH_ATTN
# JSONs were left behind). Unpack with `tar -xzf PART.tar.gz` in the results folder. A
# part cut by the call's limit is packed never: give each call a part that fits it.
# Usage: bash benchmarks/results/2026-12-07-run50/scripts/gpu50.sh PART [...]
results=$PWD/benchmarks/results
final=$OUT
for part in "$@"; do
  scratch=$(mktemp -d)
  OUT=$scratch bash "$results/2026-12-07-run48/scripts/gpu48.sh" "$part" 2>&1 \
    | tee "$scratch/$part.out"
  tar -czf "$final/$part.tar.gz" -C "$scratch" .
done
