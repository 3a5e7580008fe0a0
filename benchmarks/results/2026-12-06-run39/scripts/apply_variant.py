"""Run 39: a copy of ``kernels/`` with one of ``variants/*.patch`` (a unified diff of one
file of ``kernels/``, named by its ``--- a/kernels/NAME`` line) applied, without
``patch`` or ``git`` (the GPU machine may lack both). Every hunk must apply exactly where
it says.
Usage: python apply_variant.py KERNELS_DIR PATCH DEST_DIR  (writes DEST_DIR/kernels)"""

import re
import shutil
import sys
from pathlib import Path

kernels, patch, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
target = dest / "kernels"
shutil.rmtree(target, ignore_errors=True)
shutil.copytree(kernels, target, ignore=shutil.ignore_patterns("__pycache__"))
diff = patch.read_text().splitlines(keepends=True)
name = Path(diff[0].split()[1]).name  # "--- a/kernels/NAME"
lines = (target / name).read_text().splitlines(keepends=True)
out, at = [], 0  # the patched file so far; the next unread source line
for line in diff:
    if line.startswith(("---", "+++")):
        continue
    hunk = re.match(r"@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@", line)
    if hunk:
        start = int(hunk.group(1)) - 1
        out += lines[at:start]
        at = start
    elif line[0] in " -":
        assert lines[at] == line[1:], (patch.name, at + 1, line)
        if line[0] == " ":
            out.append(lines[at])
        at += 1
    elif line[0] == "+":
        out.append(line[1:])
(target / name).write_text("".join(out + lines[at:]))
print(target)
