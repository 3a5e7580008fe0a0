"""The 2026-12-02 lab harness with run 35's ``vaware`` (``vaware.py``; it declares ``value``,
so the harness passes it each layer's values), ``paired`` (``paired.py``) and run 32's
``pooled`` registered (the package's vsgrid / rerank is the lab's ``landed``). Usage as that
harness's:
python harness35.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    'vaware:gamma=0.93,scope=head,score=error'"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
RESULTS = HERE.parents[1]
sys.path[:0] = [str(LAB), str(RESULTS / "2026-12-05-run27" / "scripts"),
                str(RESULTS / "2026-12-05-run28" / "scripts"),
                str(RESULTS / "2026-12-05-run32" / "scripts"), str(HERE)]
import candidates  # noqa: E402
import paired  # noqa: E402
import pooled  # noqa: E402
import vaware  # noqa: E402

candidates.MODES.update(pooled=pooled.pooled, vaware=vaware.vaware, paired=paired.paired)
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
