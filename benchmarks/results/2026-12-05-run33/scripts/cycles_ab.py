"""Run 33: versions of the Gluon attention kernel compared in SM cycles (``cycles.py``'s
instrumented copies), which the power cap moves far less than milliseconds. Each
NAME=DIR names a copy of the ``kernels/`` package (``git archive BRANCH kernels``; DIR
``installed``: the installed one's), NAME=DIR,ping_pong the same launched with ping-pong;
the installed package's is always measured, as ``installed``. Per case (128K planted layer,
the paper's γ from ``GAMMAS``, contiguous and 128-/16-token pages) each version runs
``RUNS`` times, in alternating order; a run's cycles are the sum, over the programs, of
each program's cycles from its start to its output (the mean of its two consumers', read
back from the log-sum-exp rows they write them to), per computed block pair: with one
program an SM, the SM cycles a pair costs, prologue and epilogue included (~2048 is the
tensor cores' bound for a 128 x 128 x 128 pair at bf16). Reported: each version's median
over runs, its spread, and its output's relative error against the installed version's.
Usage (GPU machine): [GAMMAS="0.9 0.95"] [RUNS=5] python cycles_ab.py OUT_DIR NAME=DIR[,ping_pong] ..."""

import os
import sys
import tempfile
from pathlib import Path

from ab_common import cycles_rows, instrumented_module, report
from cycles import instrumented

import vllm_flexprefill.kernels as installed_kernels

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
scratch = Path(tempfile.mkdtemp())
installed_dir = Path(installed_kernels.__file__).parent
sources = {"installed": (installed_dir, False)}
for spec in sys.argv[2:]:
    name, _, target = spec.partition("=")
    directory, _, option = target.partition(",")
    path = installed_dir if directory == "installed" else Path(directory).resolve()
    sources[name] = (path, option == "ping_pong")
versions = {
    name: (instrumented_module(f"cyc_{name}", d, scratch, instrumented), ping_pong)
    for name, (d, ping_pong) in sources.items()
}
rows = cycles_rows(versions, int(os.environ.get("RUNS", "5")))
report(rows, out_dir / "cycles_ab.json", sys.argv[2:])
