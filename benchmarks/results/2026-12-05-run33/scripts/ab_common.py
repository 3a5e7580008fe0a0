"""Run 33's shared pieces of ``attention_ab.py`` and ``cycles_ab.py``: kernel package
copies loaded beside the installed package, and the cases both walk (GPU machine,
``scripts/`` on the path)."""

import importlib
import os
import shutil
from pathlib import Path

import torch
from common import SCALE, B, Layer, paper_config, planted
from search_ab import load_kernels

from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks


def attention_module(name: str, directory: Path):
    """The ``hopper_attention`` module of the kernel package copy in ``directory``,
    loaded as ``vllm_flexprefill.kernels_NAME``."""
    load_kernels(name, directory)
    return importlib.import_module(f"vllm_flexprefill.kernels_{name}.hopper_attention")


def instrumented_module(name: str, directory: Path, scratch: Path, rewrite):
    """The ``hopper_attention`` of the kernel package copy in ``directory``, copied
    under ``scratch`` with its source passed through ``rewrite`` (a str -> str
    instrumentation), loaded as ``vllm_flexprefill.kernels_NAME``."""
    copy = scratch / name
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module_file = copy / "hopper_attention.py"
    module_file.write_text(rewrite(module_file.read_text()))
    return attention_module(name, copy)


def rel(a, b) -> float:
    """``|a - b| / |b|`` in float32."""
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def cases(n: int = 131072):
    """``(gamma, page, q, kv, plan, found)`` for one planted layer of ``n`` tokens, the
    paper's selection at each γ of ``$GAMMAS`` (default 0.9 0.95), at each page size of
    ``$PAGES`` (default 0 128 16; 0: contiguous)."""
    q, k, v = planted(n, seed=n)
    layer = Layer(q, k, v, [n], False)
    plan = SparsePlan.build([n], [n], B, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    for gamma in map(float, os.environ.get("GAMMAS", "0.9 0.95").split()):
        found = find_blocks(q, layer.kv(), plan, paper_config(gamma), SCALE, dense)
        for page in map(int, os.environ.get("PAGES", "0 128 16").split()):
            yield gamma, page or None, q, layer.kv(page or None), plan, found
