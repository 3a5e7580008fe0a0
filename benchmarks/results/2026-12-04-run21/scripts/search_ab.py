"""Run 21's search against run 20's (fa14d33), interleaved (four rounds, order
alternating), outputs compared: the query-aware grid alone (every head query-aware, the
most work; run 20's module loaded beside main's), then the whole search with all three
of run 20's pieces (scores pass, grid, radix select reading rows whole) against main's,
and main's search per kernel (torch profiler). Planted inputs, one Llama-3.1-8B layer,
32K and 128K, contiguous and 128-token pages. Usage, from /tmp:
python DIR/search_ab.py BEFORE OUT (BEFORE: fa14d33's query_aware.py and
hopper_probe_scores.py)"""
import importlib.util, json, os, statistics, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
import vllm_flexprefill.kernels.probe as probe_module
import vllm_flexprefill.kernels.hopper_probe_scores as scores_main
import vllm_flexprefill.kernels.query_aware as grid_main
import vllm_flexprefill.kernels.search as search
from vllm_flexprefill.kernels.pooling import key_block_means, query_block_means
from vllm_flexprefill.kernels.top_mass import TopMassLaunch, top_mass

before_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.{name}_before", os.path.join(before_dir, f"{name}.py"))
    module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
    return module
grid_before, scores_before = load("query_aware"), load("hopper_probe_scores")
PIECES = {"before": (scores_before, grid_before, partial(top_mass, launch=TopMassLaunch(compact_pass=None))),
          "main": (scores_main, grid_main, top_mass)}
def use(name):
    probe_module.hopper_probe_scores, grid, search.top_mass = PIECES[name]
    search.query_aware_grid = grid.query_aware_grid
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
        dense = torch.zeros(1, dtype=torch.bool, device="cuda")
        for page in [None, 128]:
            kv = layer.kv(page)
            row = dict(tokens=n, page=page)
            if page is None:
                qa = torch.ones(1, q.shape[1], dtype=torch.int8, device="cuda")
                args = (query_block_means(q, plan, qa), key_block_means(kv, plan, q.shape[2]), qa, plan, SCALE)
                grids = {"before": grid_before.query_aware_grid(*args), "main": grid_main.query_aware_grid(*args)}
                row["grid_rel_err_main_vs_before"] = rel(grids["main"], grids["before"])
                row["grid_all_heads_ms"], row["grid_rounds"] = interleaved({name: partial(m.query_aware_grid, *args) for name, m in [("before", grid_before), ("main", grid_main)]})
                del grids
            def find(name):
                use(name)
                return search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
            found = {name: find(name) for name in PIECES}
            row["count_diff"] = int((found["main"].kv_count - found["before"].kv_count).abs().sum())
            row["pairs"] = int(found["main"].kv_count.sum())
            row["patterns_equal"] = bool(torch.equal(found["main"].pattern, found["before"].pattern))
            row["search_ms"], row["search_rounds"] = interleaved({name: partial(find, name) for name in PIECES})
            if n == 131072 and page is None:
                use("main"); find("main")
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        find("main")
                    torch.cuda.synchronize()
                per_kernel = {e.key: round(e.device_time_total / 5 / 1000, 4) for e in prof.key_averages()}
                row["main_kernels_ms"] = dict(sorted(per_kernel.items(), key=lambda it: -it[1])[:16])
                row["main_kernels_sum_ms"] = round(sum(per_kernel.values()), 3)
            print(json.dumps(row), flush=True); rows.append(row)
            del kv, found
        del q, k, v, layer; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/search_ab.json", "w"), indent=1)
