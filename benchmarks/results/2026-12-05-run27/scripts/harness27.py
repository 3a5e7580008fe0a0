"""The 2026-12-02 lab harness with run 26's ``xval``/``scoped`` and run 27's ``calib``
(``calib.py``) registered. Usage as that harness's, e.g.
python harness27.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    'calib:gamma=0.94,min_budget=1'"""
import json
import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
sys.path[:0] = [str(LAB), str(HERE.parents[1] / "2026-12-04-run26" / "scripts"), str(HERE)]
import calib  # noqa: E402
import swap  # noqa: E402
import finegrid  # noqa: E402
import geomix  # noqa: E402
import candidates  # noqa: E402
import xval  # noqa: E402

candidates.MODES.update(xval=xval.xval, scoped=xval.scoped, calib=calib.calib, swap=swap.swap, finegrid=finegrid.finegrid, geomix=geomix.geomix)
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
if os.environ.get("CALIB_LOG"):  # every search's fitted temperatures, one list per layer
    Path(os.environ["CALIB_LOG"]).write_text(json.dumps(calib.calib.log))
