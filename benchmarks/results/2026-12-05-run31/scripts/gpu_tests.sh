#!/usr/bin/env bash
# Run 31: `pytest -m gpu` as one command, from the repository's root as the README has it
# (the package installed in editable mode as CI installs it; if the GPU image cannot, the
# wheel stays installed and the tests run from tests/, where the source tree does not shadow
# it). Each line of pytest's output is stamped with the seconds since the start, so the
# tests' times come back even if the call runs past its limit.
# Usage (repository root on the GPU machine, .whl and .device/session carried):
#   bash benchmarks/results/2026-12-05-run31/scripts/gpu_tests.sh
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
source scripts/gpu_setup.sh
where=.
if python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/editable.log" 2>&1
then echo "editable install: yes"
else echo "editable install: no (see editable.log); from tests/"; where=tests
fi
start=$(date +%s)
(cd "$where" && timeout "${LIMIT:-570}" python3 -m pytest -m gpu -v -p no:cacheprovider \
    --durations=0 2>&1) | while IFS= read -r line; do
        printf '%4d %s\n' $(($(date +%s) - start)) "$line"
    done | tee "$OUT/pytest_gpu.log" | grep -v " PASSED" | tail -n 40
