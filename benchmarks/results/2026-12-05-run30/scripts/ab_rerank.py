"""A/B of the rerank's sampled-mass kernel at 128K (planted Llama-3.1-8B layer, bf16):
the installed package's kernel against the variant modules given, each swapped into
the search in turn, two rounds in alternating order. Per variant: the search's GPU
time (CUDA-graph replay) at rerank gamma 0.835, the kept density, and whether the
kept counts equal the first variant's; the paper gamma 0.9's search as the baseline.

Usage: PYTHONPATH=scripts:$PYTHONPATH python ab_rerank.py OUT_DIR FILE.py:FUNCTION ...
(run 30 ran it at b7091fe with one module per variant; they are now functions of
``variants/grouped.py``)"""

import importlib.util
import json
import sys
from pathlib import Path

import torch
from common import LAYERS, B, Layer, graph_ms, paper_config, planted, vsgrid_config

import vllm_flexprefill.kernels.search as search_module
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks

out, variant_specs = Path(sys.argv[1]), sys.argv[2:]
out.mkdir(parents=True, exist_ok=True)
installed = search_module.sampled_block_masses
variants = {"installed": installed}
for spec_text in variant_specs:  # FILE.py:FUNCTION
    path, function = spec_text.split(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants[function] = getattr(module, function)

n = 131072
layer = Layer(*planted(n, n, LAYERS["llama-3.1-8b"]), [n], False)
plan = SparsePlan.build([n], [n], B, "cuda")
q, kv = layer.q, layer.kv()
scale = q.shape[2] ** -0.5
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
configs = {
    "paper-0.9": paper_config(0.9),
    "rerank-0.835": vsgrid_config(0.835, "rerank"),
}
rows = []
first_counts = {}  # per config: the first variant's kept counts
for rnd in range(2):
    order = list(variants) if rnd == 0 else list(variants)[::-1]
    for name in order:
        search_module.sampled_block_masses = variants[name]
        for label, config in configs.items():
            if label.startswith("paper") and name != "installed":
                continue
            search = lambda c=config: find_blocks(q, kv, plan, c, scale, dense, None)  # noqa: E731
            result = search()
            torch.cuda.synchronize()
            ms = graph_ms(search)
            density = result.kv_count.sum().item() / (
                q.shape[1] * sum(plan.causal_pairs)
            )
            same = None
            if label not in first_counts:
                first_counts[label] = result.kv_count.clone()
            else:
                same = bool(torch.equal(first_counts[label], result.kv_count))
            row = dict(
                round=rnd,
                variant=name,
                config=label,
                search_gpu_ms=ms,
                density=density,
                same_counts_as_first=same,
            )
            print(row, flush=True)
            rows.append(row)
search_module.sampled_block_masses = installed
(out / "ab_rerank.json").write_text(json.dumps(rows, indent=1))
