"""Run 33: versions of the Gluon attention kernel compared in SM cycles (``cycles.py``'s
instrumented copies), which the power cap moves far less than milliseconds. Each
NAME=DIR names a copy of the ``kernels/`` package (``git archive BRANCH kernels``; DIR
``installed``: the installed one's), NAME=DIR,ping_pong the same launched with ping-pong;
the installed package's is always measured, as ``installed``. Per case (128K planted layer,
the paper's γ from ``GAMMAS``, contiguous and 128-/16-token pages) each version runs
``RUNS`` times, in alternating order; a run's consumer cycles are the sum, over every
consumer partition of every program, of the cycles from its first wait to its output
(read back from the log-sum-exp rows it writes them to). Reported: the median over runs
of those cycles a computed block pair and a consumer (so ~2048 is the tensor cores' bound
for a 128 x 128 x 128 tile pair at bf16), their spread, and each output's relative error
against the installed version's.
Usage (GPU machine): [GAMMAS="0.9 0.95"] [RUNS=5] python cycles_ab.py OUT_DIR NAME=DIR[,ping_pong] ..."""

import importlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from common import SCALE, B, Layer, paper_config, planted, run_meta
from cycles import instrumented

import vllm_flexprefill.kernels as installed_kernels
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks


def load_instrumented(name: str, directory: Path, scratch: Path):
    """The instrumented ``hopper_attention`` of the kernel package copy in
    ``directory``, loaded as ``vllm_flexprefill.kernels_cyc_NAME``."""
    copy = scratch / name
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module_file = copy / "hopper_attention.py"
    module_file.write_text(instrumented(module_file.read_text()))
    package = f"vllm_flexprefill.kernels_cyc_{name}"
    spec = importlib.util.spec_from_file_location(
        package, copy / "__init__.py", submodule_search_locations=[str(copy)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.hopper_attention")


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
scratch = Path(tempfile.mkdtemp())
installed_dir = Path(installed_kernels.__file__).parent
sources = {"installed": (installed_dir, False)}
for spec in sys.argv[2:]:
    name, _, target = spec.partition("=")
    directory, _, option = target.partition(",")
    path = installed_dir if directory == "installed" else Path(directory).resolve()
    sources[name] = (path, option == "ping_pong")
versions = {name: load_instrumented(name, d, scratch) for name, (d, _) in sources.items()}
runs = int(os.environ.get("RUNS", "5"))

n = 131072
q, k, v = planted(n, seed=n)
layer = Layer(q, k, v, [n], False)
plan = SparsePlan.build([n], [n], B, "cuda")
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
rows = []
for gamma in map(float, os.environ.get("GAMMAS", "0.9 0.95").split()):
    found = find_blocks(q, layer.kv(), plan, paper_config(gamma), SCALE, dense)
    pairs = found.kv_count.sum().item()
    for page in (None, 128, 16):
        kv = layer.kv(page)
        cycles = {name: [] for name in versions}
        outs = {}
        for i in range(runs):
            for name in list(versions) if i % 2 == 0 else list(versions)[::-1]:
                module = versions[name]
                o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
                lse = torch.full(q.shape[:2], float("nan"), device="cuda")
                module.hopper_sparse_attention(
                    q, kv, plan, found.kv_index, found.kv_count,
                    SCALE * math.log2(math.e), o, lse,
                    module.HopperLaunch(ping_pong=sources[name][1]),
                )  # fmt: skip
                torch.cuda.synchronize()
                # every row holds its consumer's cycles: 64 rows a consumer
                cycles[name].append(lse.double().sum().item() / (B // 2) / (2 * pairs))
                outs[name] = o
        row = dict(gamma=gamma, page=page, pairs=pairs)
        for name in versions:
            row[name] = dict(
                cycles_per_pair=statistics.median(cycles[name]),
                spread=(max(cycles[name]) - min(cycles[name])) / statistics.median(cycles[name]),
                rel_out=rel(outs[name], outs["installed"]),
                nan=bool(outs[name].isnan().any()),
            )  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
        del kv, outs
(out_dir / "cycles_ab.json").write_text(
    json.dumps(dict(meta=run_meta(versions=sys.argv[2:]), rows=rows), indent=1)
)
