"""The 2026-12-02 lab harness with run 28's ``refine`` (rerank) and run 33's
``pooled_sampled`` and ``pooled_package`` (``pooled_sampled.py``) registered (the package's
selection is the lab's ``landed``, ``selection=rerank`` for its rerank). Usage as that harness's, e.g.
python harness33.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    'pooled_sampled:gamma=0.9,min_budget=1,queries=16,widen=2'"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
RESULTS = HERE.parents[1]
sys.path[:0] = [str(LAB), str(RESULTS / "2026-12-05-run27" / "scripts"),
                str(RESULTS / "2026-12-05-run28" / "scripts"), str(HERE)]
import candidates  # noqa: E402
import pooled_sampled  # noqa: E402
import refine  # noqa: E402

candidates.MODES.update(
    refine=refine.refine,
    pooled_sampled=pooled_sampled.pooled_sampled,
    pooled_package=pooled_sampled.pooled_package,
)
runpy.run_path(str(LAB / "harness.py"), run_name="__main__")
