"""The repository's ``kernels/`` is installed as ``vllm_flexprefill.kernels``. Run from
the repository root (``python -m``, or a script there), where it is also importable as a
top-level ``kernels``, it must not shadow the PyPI package of that name, which
transformers (5.25 on) imports whenever it is installed."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_from_the_repository_root_kernels_is_the_pypi_package(tmp_path):
    pypi = tmp_path / "site" / "kernels"
    pypi.mkdir(parents=True)
    (pypi / "__init__.py").write_text("ORIGIN = 'pypi'\n")
    (pypi / "utils.py").write_text("SUBMODULE = 'pypi'\n")
    code = (
        "import kernels, kernels.utils, vllm_flexprefill.kernels as ours; "
        "print(kernels.ORIGIN, kernels.utils.SUBMODULE, ours.KVSource.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],  # sys.path[0]: the working directory, the root
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["pypi", "pypi", "KVSource"]
