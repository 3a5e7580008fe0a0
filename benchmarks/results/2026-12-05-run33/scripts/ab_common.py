"""Run 33's shared pieces of ``attention_ab.py`` and ``cycles_ab.py``: kernel package
copies loaded beside the installed package, and the cases both walk (GPU machine,
``scripts/`` on the path)."""

import importlib
import json
import math
import os
import shutil
import statistics
from pathlib import Path

import torch
from common import SCALE, B, Layer, paper_config, planted, run_meta
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


def launch(module, q, kv, plan, found, ping_pong: bool = False):
    """``module``'s ``hopper_sparse_attention`` on one case, into poisoned (NaN) output
    and log-sum-exp; waits for it. Returns ``(out, lse)``."""
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
    lse = torch.full(q.shape[:2], float("nan"), device="cuda")
    module.hopper_sparse_attention(
        q, kv, plan, found.kv_index, found.kv_count, SCALE * math.log2(math.e),
        out, lse, module.HopperLaunch(ping_pong=ping_pong),
    )  # fmt: skip
    torch.cuda.synchronize()
    return out, lse


def cycles_rows(versions: dict, runs: int):
    """Per case of :func:`cases`, each version's SM cycles a computed pair:
    ``versions`` {name: (instrumented module, ping_pong)}, the first the reference for
    the outputs; ``runs`` runs each, in alternating order. Each run's count is the sum
    of the log-sum-exp rows (every row holds its consumer's cycles: 128 rows a
    program or work item) over the pairs. Yields a row a case: each version's median,
    its spread and its output's relative error against the first's."""
    first = next(iter(versions))
    for gamma, page, q, kv, plan, found in cases():
        pairs = found.kv_count.sum().item()
        cycles = {name: [] for name in versions}
        outs = {}
        for i in range(runs):
            for name in list(versions) if i % 2 == 0 else list(versions)[::-1]:
                module, ping_pong = versions[name]
                outs[name], lse = launch(module, q, kv, plan, found, ping_pong)
                cycles[name].append(lse.double().sum().item() / B / pairs)
        row = dict(gamma=gamma, page=page, pairs=pairs)
        for name in versions:
            median = statistics.median(cycles[name])
            row[name] = dict(
                cycles_per_pair=median,
                spread=(max(cycles[name]) - min(cycles[name])) / median,
                rel_out=rel(outs[name], outs[first]),
                nan=bool(outs[name].isnan().any()),
            )  # fmt: skip
        yield row


def report(rows, path: Path, versions: list) -> None:
    """Print each of ``rows`` (dicts) as a JSON line as it comes, then write them all to
    ``path`` with the run's metadata (``versions``: the command line's versions)."""
    kept = []
    for row in rows:
        print(json.dumps(row), flush=True)
        kept.append(row)
    path.write_text(json.dumps(dict(meta=run_meta(versions=versions), rows=kept), indent=1))
