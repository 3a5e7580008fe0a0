"""Run 40: Nsight Compute's warp-state sampling of the Hopper attention kernel, per SASS
instruction (``gpu39.sh stalls`` exports it as CSV: ``ncu --import stalls.ncu-rep --page
source --print-source sass --csv``), summarised: the share of all samples per stall
reason; the samples of warps parked at a partition's end (the ``NOP`` of the loop that
waits in ``USETMAXREG.TRY_ALLOC`` to take registers back, once a partition has no work
left); and, without those, each reason's share by opcode.
Usage: python stall_summary.py stalls_sass.csv[.gz]"""

import collections
import csv
import gzip
import re
import sys

path = sys.argv[1]
with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
    rows = list(csv.reader(f))
header, data = rows[1], rows[2:]
col = {name: i for i, name in enumerate(header)}
SAMPLES = col["Warp Stall Sampling (All Samples)"]
REASONS = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]


def value(row, name):
    return float(row[col[name]] or 0)


def opcode(row):
    return re.sub(r"^@!?U?P\w+\s+", "", row[1].strip()).split()[0].split(".")[0]


total = sum(float(r[SAMPLES] or 0) for r in data)
print(f"samples {total:.0f}")
for reason in sorted(REASONS, key=lambda n: -sum(value(r, n) for r in data))[:8]:
    print(f"  {reason:22s} {100 * sum(value(r, reason) for r in data) / total:5.1f}%")

# a parked warp's loop: NOP, USETMAXREG.TRY_ALLOC, PLOP3, a branch back to the NOP
parked = {
    i
    for i in range(len(data) - 1)
    if opcode(data[i]) == "NOP" and "USETMAXREG.TRY_ALLOC" in data[i + 1][1]
}
parked_samples = sum(float(data[i][SAMPLES] or 0) for i in parked)
print(
    f"parked at a partition's end: {100 * parked_samples / total:.1f}% of the samples"
)
working = [r for i, r in enumerate(data) if i not in parked]
rest = total - parked_samples
print("the other warps' samples by reason and opcode (% of theirs):")
for reason in sorted(REASONS, key=lambda n: -sum(value(r, n) for r in working))[:6]:
    by_op = collections.Counter()
    for r in working:
        by_op[opcode(r)] += value(r, reason)
    share = 100 * sum(by_op.values()) / rest
    top = ", ".join(f"{op} {100 * v / rest:.1f}" for op, v in by_op.most_common(4))
    print(f"  {reason:22s} {share:5.1f}%: {top}")
barriers = [r for r in working if "BAR.SYNC" in r[1]]
print(
    "BAR.SYNC instructions (Triton's partition barriers among them): "
    f"{100 * sum(float(r[SAMPLES] or 0) for r in barriers) / total:.2f}% of the samples"
)
