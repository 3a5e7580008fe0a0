"""Run 27's lab harness (``harness27.py``) with run 28's candidates registered. Usage as
that harness's (options unquoted), e.g.
python harness28.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    refine:gamma=0.93,min_budget=1,queries=8,widen=2
(`landed`, the package's `selection: vsgrid`, is the lab's own mode.)"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1]
RUN27 = RESULTS / "2026-12-05-run27" / "scripts"
sys.path[:0] = [str(HERE), str(RUN27), str(RESULTS / "2026-12-02-selection-cpu")]
import candidates  # noqa: E402
import refine  # noqa: E402

candidates.MODES.update(refine=refine.refine)
runpy.run_path(str(RUN27 / "harness27.py"), run_name="__main__")
