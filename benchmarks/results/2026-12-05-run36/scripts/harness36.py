"""The 2026-12-02 lab harness with run 36's ``headwide`` (``headwide.py``) registered
(the package's selection is the lab's ``landed``). Usage as that harness's:
python harness36.py --text code --tokens 8192 --out ../fidelity/cpu.jsonl \
    'headwide:gamma=0.938,selection=rerank,min_budget=1,block_size=64'"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
sys.path[:0] = [str(LAB), str(HERE)]
import candidates  # noqa: E402
import headwide  # noqa: E402

candidates.MODES.update(headwide=headwide.headwide)
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
