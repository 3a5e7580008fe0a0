"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_functional_api_example_runs():
    (example,) = [b for b in python_blocks() if "flex_prefill_attention(" in b]
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["out"].shape == scope["q"].shape
    assert len(scope["stats"]) == 2 and scope["stats"][1].block_mask.shape == (
        32,
        9,
        24,
    )
