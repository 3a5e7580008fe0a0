#!/usr/bin/env bash
# Stages that bring fa4_ab.py's dependencies to the GPU machine (its vLLM bundle leaves
# nvidia-cutlass-dsl out): the wheels of flash-attn-4 4.0.0b19, nvidia-cutlass-dsl 4.5.2
# (with libs-base and libs-cu13: 74.5 + 78.8 MB), quack-kernels 0.5.0, cuda-python and
# cuda-core, as one tar split into transfers of at most 64 MiB.
# Usage (repository root): bash benchmarks/results/2026-12-04-run24/scripts/fa4_carry.sh DEST
#   -> DEST/fa4.tar-stage1..N; on the GPU machine run each
#   `bash DEST/fa4.tar-stageK/stage.sh` in its own call, back to back, then:
#   tar -xf /root/carry/fa4.tar -C /tmp && pip install --no-deps --no-index /tmp/fa4/*.whl
set -euo pipefail
dest=$(realpath -m "${1:-.device}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/fa4"
platforms="--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d "$work/fa4" "flash-attn-4==4.0.0b19" \
    "nvidia-cutlass-dsl==4.5.2" "nvidia-cutlass-dsl-libs-base==4.5.2" \
    "nvidia-cutlass-dsl-libs-cu13==4.5.2" "quack-kernels==0.5.0" "cuda-python" \
    "cuda-core==1.2.2"
tar -cf "$work/fa4.tar" -C "$work" fa4
repo=$(git rev-parse --show-toplevel)
bash "$repo/../shared/device/split-carry.sh" "$work/fa4.tar" "$dest" fa4.tar
