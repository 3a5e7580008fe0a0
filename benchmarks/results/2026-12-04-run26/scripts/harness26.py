"""The 2026-12-02 lab harness (``../../2026-12-02-selection-cpu/harness.py``) with the
``xval`` mode (``xval.py``) registered. Usage as that harness's, e.g.
python harness26.py --text prose --tokens 8192 --out ../fidelity/results.jsonl \
    'xval:gamma=0.92,min_budget=1'"""
import json
import os
import runpy
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "2026-12-02-selection-cpu"
sys.path.insert(0, str(LAB))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import xval  # noqa: E402
import candidates  # noqa: E402  (the lab's module, shared with the harness below)

candidates.MODES["xval"] = xval.xval
candidates.MODES["scoped"] = xval.scoped
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
if os.environ.get("XVAL_LOG"):  # every search's fitted weights, one list per layer
    Path(os.environ["XVAL_LOG"]).write_text(json.dumps(xval.xval.log))
