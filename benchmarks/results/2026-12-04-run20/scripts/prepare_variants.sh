#!/usr/bin/env bash
# For each prepared patch of this folder, the kernel module it changes, patched, under DEST
# (run from the repository root: bash benchmarks/results/2026-12-04-run20/scripts/prepare_variants.sh DEST).
# The variants are loaded beside main's modules by variants_ab.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=$1
mkdir -p "$dest"
for name in scores_async_half scores_three_consumers qa_grid_tiled; do
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" HEAD
  git -C "$tree" apply "$here/$name.patch"
  case $name in
    qa_grid_*) module=query_aware.py ;;
    *) module=hopper_probe_scores.py ;;
  esac
  cp "$tree/kernels/$module" "$dest/${name}.py"
  git worktree remove --force "$tree"
done
ls "$dest"
