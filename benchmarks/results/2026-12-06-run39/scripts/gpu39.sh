#!/usr/bin/env bash
# Run 39's GPU calls (repository root on the GPU machine, after the vLLM stages; .whl and
# .device/session carried). PART:
#   attention  Nsight Compute's counters (the eight sections of $SECTIONS, clocks left
#              alone) of the Hopper attention kernel's second launch, 128K planted, γ 0.9,
#              contiguous K/V and 128-token pages (ncu_target.py attention)
#   mass       the same for rerank's sampled-mass kernel in the second head-wide search
#              (128K, 64-token blocks, γ 0.938; ncu_target.py mass)
#   stalls     the attention kernel's contiguous launch with the source-level counters
#              (warp-state sampling per SASS instruction), exported, then printed per
#              instruction as CSV
#   search     four sections (speed of light, memory, occupancy, launch) of every kernel of
#              the paper's 128K search at γ 0.9 (its second run; ncu_target.py search)
#   grouped    two variants of kernels/rerank.py (variants/NAME.patch, applied by
#              apply_variant.py to a copy of the working tree's kernels/) profiled beside
#              the installed package by run 38's mass_knockout.py (128K, 64-token blocks,
#              head-wide γ 0.938): grouped (a KV head's query heads in one program of the
#              sampled masses, each key tile read once for their union) and head-tiles
#              (the head-wide bound's search on [32, 256] tiles, 8 warps); then the rerank
#              tests with the grouped variant over the installed module (the wheel again
#              after)
#   release    the Hopper attention kernel with variants/release-per-thread.patch (every
#              consumer thread releases a stage, as CUTLASS's one-CTA pipeline, and the
#              partition barrier Triton inserts before a release moved to just after the
#              products' issue) against the installed kernel in SM cycles (run 33's
#              cycles_ab.py; 128K, γ 0.9 / 0.95, contiguous and 128-/16-token pages), then
#              test_hopper_attention_gpu.py on it (the wheel again after)
# Usage: bash benchmarks/results/2026-12-06-run39/scripts/gpu39.sh PART [...]
export R=$PWD
GIT_REV=$(cat .device/session/rev)
export GIT_REV
export PYTHONPATH="$R/scripts:$R/benchmarks/results/2026-12-05-run33/scripts:$PYTHONPATH"
source scripts/gpu_setup.sh
which ncu || ls /opt/nvidia/nsight-compute/*/ncu
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
for part in "$@"; do
  case $part in
  attention)
    (cd /tmp && GAMMAS=0.9 PAGES="0 128" timeout 170 "$NCU" --clock-control none $SECTIONS \
        -k regex:_hopper_sparse_attention_kernel --launch-skip 2 --launch-count 2 \
        python3 "$R/benchmarks/results/2026-12-06-run39/scripts/ncu_target.py" attention \
        > "$OUT/ncu_attention.txt" 2> "$OUT/ncu_attention.err"; echo "rc $?"; tail -n 3 "$OUT/ncu_attention.err") ;;
  mass)
    (cd /tmp && timeout 170 "$NCU" --clock-control none $SECTIONS \
        -k regex:_sampled_mass_kernel --launch-skip 1 --launch-count 1 \
        python3 "$R/benchmarks/results/2026-12-06-run39/scripts/ncu_target.py" mass \
        > "$OUT/ncu_mass.txt" 2> "$OUT/ncu_mass.err"; echo "rc $?"; tail -n 3 "$OUT/ncu_mass.err") ;;
  stalls)
    (cd /tmp && GAMMAS=0.9 PAGES=0 timeout 200 "$NCU" --clock-control none \
        --section SourceCounters --section WarpStateStats --section SpeedOfLight \
        -k regex:_hopper_sparse_attention_kernel --launch-skip 1 --launch-count 1 \
        --export "$OUT/stalls" --force-overwrite \
        python3 "$R/benchmarks/results/2026-12-06-run39/scripts/ncu_target.py" attention \
        > "$OUT/ncu_stalls.txt" 2>&1; echo "rc $?")
    "$NCU" --import "$OUT/stalls.ncu-rep" --page source --print-source sass --csv \
        > "$OUT/stalls_sass.csv" 2> "$OUT/stalls_sass.err"
    "$NCU" --import "$OUT/stalls.ncu-rep" --page details > "$OUT/ncu_stalls.txt" 2>&1
    wc -l "$OUT/stalls_sass.csv"; head -c 600 "$OUT/stalls_sass.csv" ;;
  search)
    (cd /tmp && timeout 200 "$NCU" --clock-control none --profile-from-start off \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section LaunchStats \
        python3 "$R/benchmarks/results/2026-12-06-run39/scripts/ncu_target.py" search \
        > "$OUT/ncu_search.txt" 2> "$OUT/ncu_search.err"; echo "rc $?")
    grep -E "^  [_a-z].*\(|Duration|DRAM Throughput|L2 Hit" "$OUT/ncu_search.txt" | head -n 80 ;;
  release)
    S="$R/benchmarks/results/2026-12-06-run39/scripts"
    G="$R/.device/session/variants/release"
    python3 "$S/apply_variant.py" "$R/kernels" "$S/variants/release-per-thread.patch" "$G" > /dev/null
    (cd /tmp && PAGES="0 128 16" timeout 240 python3 "$R/benchmarks/results/2026-12-05-run33/scripts/cycles_ab.py" \
        "$OUT/cycles-release" release="$G/kernels" 2>&1 | tee "$OUT/cycles-release.log" | tail -n 6 | cut -c1-400)
    K=$(cd /tmp && python3 -c "import vllm_flexprefill.kernels as k, os; print(os.path.dirname(k.__file__))" 2>/dev/null | tail -1)
    case "$K" in "$R"/*) echo "an editable install (gpu_tests.sh): reinstall the wheel first"; continue ;; esac
    cp "$G/kernels/hopper_attention.py" "$K/hopper_attention.py"
    (cd tests && timeout 240 python3 -m pytest -q -p no:cacheprovider test_hopper_attention_gpu.py \
        2>&1 | tee "$OUT/release_tests.log" | tail -n 3)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  grouped)
    S="$R/benchmarks/results/2026-12-06-run39/scripts"
    versions=()
    for name in grouped head-tiles; do
      G="$R/.device/session/variants/$name"
      python3 "$S/apply_variant.py" "$R/kernels" "$S/variants/$name.patch" "$G" > /dev/null
      versions+=("$name=$G/kernels")
    done
    (cd /tmp && timeout 300 python3 "$R/benchmarks/results/2026-12-06-run38/scripts/mass_knockout.py" \
        "$OUT/grouped" "${versions[@]}" 2>&1 | grep -v Warning | tee "$OUT/grouped.log" | cut -c1-400 | tail -n 4)
    V="$R/.device/session/variants/grouped/kernels/rerank.py"
    K=$(cd /tmp && python3 -c "import vllm_flexprefill.kernels as k, os; print(os.path.dirname(k.__file__))" 2>/dev/null | tail -1)
    case "$K" in "$R"/*) echo "an editable install (gpu_tests.sh): reinstall the wheel first"; continue ;; esac
    cp "$V" "$K/rerank.py"
    (cd tests && timeout 200 python3 -m pytest -q -p no:cacheprovider test_kernels.py -k rerank \
        2>&1 | tee "$OUT/grouped_tests.log" | tail -n 3)
    python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl ;;
  esac
  [ -f "$OUT/ncu_$part.txt" ] || continue
  grep -E "Duration|Throughput|Busy|Warp Cycles Per Issued|Issue Slots|Achieved Occupancy|L2 Hit|Stall" "$OUT/ncu_$part.txt" | head -n 40
done
