#!/usr/bin/env bash
# Rebuild the Gluon attention variants of run 24 beside this script: hopper_A.py is
# kernels/hopper_attention.py at fdd1716 with its two relative imports made absolute (so
# the file loads on its own); each variant_V.patch turns a copy of it into hopper_V.py.
# Then: python sass_seq.py hopper_V.py x   (sm_90 compile; DEPBAR / HGMMA lines)
set -e
here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
git -C "$repo" show fdd1716:kernels/hopper_attention.py \
  | sed -e 's/^from \.kv_access import/from vllm_flexprefill.kernels.kv_access import/' \
        -e 's/^from \.plan import/from vllm_flexprefill.kernels.plan import/' > "$here/hopper_A.py"
for patch in "$here"/variant_*.patch; do
  v=$(basename "$patch" .patch); v=${v#variant_}
  cp "$here/hopper_A.py" "$here/hopper_$v.py"
  patch -s "$here/hopper_$v.py" "$patch"
done
