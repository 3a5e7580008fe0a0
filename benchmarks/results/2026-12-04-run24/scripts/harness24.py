"""The 2026-12-02 lab harness (``../../2026-12-02-selection-cpu/harness.py``) with the
``adaptive`` mode (``adaptive.py``) registered. Usage as that harness's, e.g.
python harness24.py --text prose --tokens 8192 --out ../adaptive/results.jsonl \
    'adaptive:gamma=0.9,vgamma=0.92,need=0.85'"""
import runpy
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "2026-12-02-selection-cpu"
sys.path.insert(0, str(LAB))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import adaptive  # noqa: E402
import candidates  # noqa: E402  (the lab's module, shared with the harness below)

candidates.MODES["adaptive"] = adaptive.adaptive
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
