"""The 2026-12-02 lab harness with run 35's ``vaware`` (``vaware.py``), ``paired``
(``paired.py``), run 32's ``pooled`` and the package's vsgrid / rerank (``landed``, as run 28's
harness) registered; modes named in ``VALUE_MODES`` also get the layer's values as ``value=``. Usage as that harness's:
python harness35.py --text code --tokens 8192 --out ../fidelity/results.jsonl \
    'vaware:gamma=0.93,scope=head,score=error'"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = HERE.parents[1] / "2026-12-02-selection-cpu"
RESULTS = HERE.parents[1]
sys.path[:0] = [str(LAB), str(RESULTS / "2026-12-05-run27" / "scripts"),
                str(RESULTS / "2026-12-05-run28" / "scripts"),
                str(RESULTS / "2026-12-05-run32" / "scripts"), str(HERE)]
import candidates  # noqa: E402
import harness  # noqa: E402
import paired  # noqa: E402
import pooled  # noqa: E402
import vaware  # noqa: E402
from vllm_flexprefill import reference as R  # noqa: E402

VALUE_MODES = {"vaware"}
candidates.MODES.update(
    pooled=pooled.pooled, vaware=vaware.vaware, paired=paired.paired,
    landed=lambda q, k, g, c, s: R.vsgrid_search(q, k, g, c, s)[0],
)
_register = harness.register


def register(mode, config, opts):
    """The lab harness's ``register``, with ``value=`` passed to ``VALUE_MODES``."""
    if mode not in VALUE_MODES:
        return _register(mode, config, opts)
    fn = candidates.MODES[mode]
    values = {}

    def with_value(q, k, geo, config, scale, **kw):
        return fn(q, k, geo, config, scale, value=values["v"], **kw)

    from transformers import AttentionInterface
    candidates.MODES["__with_value"] = with_value
    impl = _register("__with_value", config, opts)
    inner = AttentionInterface._global_mapping[impl]

    def attention(module, query, key, value, *args, **kw):
        values["v"] = value[0].transpose(0, 1)  # the lab harness runs one sequence
        return inner(module, query, key, value, *args, **kw)

    AttentionInterface.register(impl, attention)
    return impl


harness.register = register
if __name__ == "__main__":
    harness.main()
