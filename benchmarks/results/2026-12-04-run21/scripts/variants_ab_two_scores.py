"""Run 20's prepared candidates against main, interleaved (four rounds, order alternating),
outputs compared: the probe with main's Hopper scores pass (H), the second half's product
issued early (A), three consumer warp groups (T); and the query-aware grid, main's (Q)
against tiles of query blocks (G). Planted inputs, one Llama-3.1-8B layer, 32K and 128K,
contiguous and 128-token pages. Usage, from /tmp: python DIR/variants_ab.py VARIANTS OUT
(VARIANTS: the folder prepare_variants.sh filled)."""
import dataclasses, importlib.util, json, os, statistics, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe
import vllm_flexprefill.kernels.probe as probe_module
import vllm_flexprefill.kernels.hopper_probe_scores as scores_main
import vllm_flexprefill.kernels.query_aware as qa_main
import vllm_flexprefill.kernels.search as search
from vllm_flexprefill.kernels.pooling import key_block_means, query_block_means

variants_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.{name}", os.path.join(variants_dir, f"{name}.py"))
    module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
    return module
SCORES = {"H": scores_main, "A": load("scores_async_half")}
GRIDS = {"Q": qa_main, "G": load("qa_grid_tiled")}
LAUNCH = ProbeLaunch.default(128, quantised=False)
def probe_with(name, *args):
    probe_module.hopper_probe_scores = SCORES[name]
    return probe(*args, LAUNCH)
def interleaved(fns, rep=100):
    times = {n: [] for n in fns}
    for rnd in range(4):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            times[name].append(bench(fns[name], warmup=10, rep=rep))
    return {n: statistics.median(t) for n, t in times.items()}, times
def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
rows = []
try:
    for n in [32768, 131072]:
        q, k, v = planted(n, seed=n)
        layer = Layer(q, k, v, [n], False)
        plan = SparsePlan.build([n], [n], B, "cuda")
        for page in [None, 128]:
            kv = layer.kv(page)
            outs = {name: probe_with(name, q, kv, plan, SCALE) for name in SCORES}
            errors = {name: {f: rel(getattr(outs[name], f), getattr(outs["H"], f)) for f in ("tokens", "blocks")} for name in SCORES}
            row = dict(tokens=n, page=page, probe_rel_err_vs_H=errors)
            row["probe_ms"], row["probe_rounds"] = interleaved({name: partial(probe_with, name, q, kv, plan, SCALE) for name in SCORES})
            if page is None:
                # the grid as the search feeds it, every head query-aware (the most work)
                qa = torch.ones(1, q.shape[1], dtype=torch.int8, device="cuda")
                args = (query_block_means(q, plan, qa), key_block_means(kv, plan, q.shape[2]), qa, plan, SCALE)
                grids = {name: module.query_aware_grid(*args) for name, module in GRIDS.items()}
                row["grid_rel_err_G_vs_Q"] = rel(grids["G"], grids["Q"])
                row["grid_all_heads_ms"], row["grid_rounds"] = interleaved({name: partial(module.query_aware_grid, *args) for name, module in GRIDS.items()})
                def find(name):
                    search.query_aware_grid = GRIDS[name].query_aware_grid
                    probe_module.hopper_probe_scores = scores_main
                    return search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, torch.zeros(1, dtype=torch.bool, device="cuda"))
                found = {name: find(name) for name in GRIDS}
                row["count_diff_G_vs_Q"] = int((found["G"].kv_count - found["Q"].kv_count).abs().sum())
                row["search_ms"], row["search_rounds"] = interleaved({name: partial(find, name) for name in GRIDS})
            print(json.dumps(row), flush=True); rows.append(row)
            del kv
        del q, k, v, layer; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/variants_ab.json", "w"), indent=1)
