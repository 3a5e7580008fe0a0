"""The 2026-12-02 lab harness with run 32's ``pooled`` (``pooled.py``) registered. Usage as
that harness's, e.g.
python harness32.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    'pooled:gamma=0.93,scope=head'"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
RESULTS = HERE.parents[1]
sys.path[:0] = [str(LAB), str(RESULTS / "2026-12-05-run27" / "scripts"),
                str(RESULTS / "2026-12-05-run28" / "scripts"), str(HERE)]
import candidates  # noqa: E402
import pooled  # noqa: E402
import pooled_refine  # noqa: E402

candidates.MODES.update(pooled=pooled.pooled, pooled_refine=pooled_refine.pooled_refine)
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
