"""Run 34: branch hopper-persistent's kernel (one program an SM, work items claimed
from an atomic counter) against the installed kernel in SM cycles a computed pair, as
run 33's ``cycles_ab.py`` counts them: the installed kernel through ``cycles.py``'s
instrumentation (each program's cycles from its start to its output), the persistent
one with its own ``CYCLES`` switch (each work item's cycles since the consumer's
previous output, the program's start for the first), so both sums are the SMs' busy
cycles up to each program's last output. Cases as ``ab_common.cases`` (``GAMMAS``,
``PAGES``); ``RUNS`` runs each, alternating. Times and outputs: ``attention_ab.py OUT
persistent=DIR``.
Usage (GPU machine, run 33's scripts on PYTHONPATH): python persistent_cycles.py
OUT_DIR DIR (DIR: the branch's kernels/ copy)"""

import os
import sys
import tempfile
from pathlib import Path

from ab_common import attention_module, cycles_rows, instrumented_module, report
from cycles import instrumented

import vllm_flexprefill.kernels as installed_kernels

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
scratch = Path(tempfile.mkdtemp())
installed_dir = Path(installed_kernels.__file__).parent
persistent = attention_module("persistent", Path(sys.argv[2]).resolve())
persistent.CYCLES = True
versions = {
    "installed": (
        instrumented_module("cyc_installed", installed_dir, scratch, instrumented),
        False,
    ),
    "persistent": (persistent, False),
}
rows = cycles_rows(versions, int(os.environ.get("RUNS", "5")))
report(rows, out_dir / "persistent_cycles.json", sys.argv[2:])
