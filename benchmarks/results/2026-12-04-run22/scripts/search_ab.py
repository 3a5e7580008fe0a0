"""Run 22's search against run 21's (the `kernels/` package of 97297ac, loaded beside
main's as `vllm_flexprefill.kernels_before`), interleaved (four rounds, order
alternating), outputs compared: the query-aware grid alone (every head query-aware),
then the whole search (paper γ 0.9, max_density 0.6: the block lists built, then
densified), and main's search per kernel (torch profiler). Planted inputs, one
Llama-3.1-8B layer, 32K and 128K, contiguous and 128-token pages. Usage, from /tmp:
python DIR/search_ab.py BEFORE_KERNELS_DIR OUT"""
import importlib, importlib.util, json, os, statistics, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
import vllm_flexprefill.kernels.search as search_main
import vllm_flexprefill.kernels.query_aware as grid_main
from vllm_flexprefill.kernels.pooling import key_block_means, query_block_means

before_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
spec = importlib.util.spec_from_file_location(
    "vllm_flexprefill.kernels_before", os.path.join(before_dir, "__init__.py"),
    submodule_search_locations=[before_dir])
package = importlib.util.module_from_spec(spec); sys.modules[spec.name] = package
spec.loader.exec_module(package)
search_before = importlib.import_module("vllm_flexprefill.kernels_before.search")
grid_before = importlib.import_module("vllm_flexprefill.kernels_before.query_aware")
SEARCH = {"before": search_before, "main": search_main}


def interleaved(fns, rep=100):
    times = {n: [] for n in fns}
    for rnd in range(4):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            times[name].append(bench(fns[name], warmup=10, rep=rep))
    return {n: statistics.median(t) for n, t in times.items()}, times


def listed(found):
    width = found.kv_index.shape[-1]
    keep = torch.arange(width, device="cuda") < found.kv_count[..., None]
    return torch.where(keep, found.kv_index, -1)


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
                row["grid_equal"] = bool(torch.equal(grids["main"], grids["before"]))
                row["grid_all_heads_ms"], row["grid_rounds"] = interleaved(
                    {name: partial(m.query_aware_grid, *args) for name, m in [("before", grid_before), ("main", grid_main)]})
                del grids
            def find(name):
                return SEARCH[name].find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
            found = {name: find(name) for name in SEARCH}
            row["counts_equal"] = bool(torch.equal(found["main"].kv_count, found["before"].kv_count))
            row["lists_equal"] = bool(torch.equal(listed(found["main"]), listed(found["before"])))
            row["pairs"] = int(found["main"].kv_count.sum())
            row["patterns_equal"] = bool(torch.equal(found["main"].pattern, found["before"].pattern))
            row["search_ms"], row["search_rounds"] = interleaved({name: partial(find, name) for name in SEARCH})
            if page is None:
                for name in SEARCH:
                    find(name)
                    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                        for _ in range(5):
                            find(name)
                        torch.cuda.synchronize()
                    per_kernel = {e.key: round(e.device_time_total / 5 / 1000, 4) for e in prof.key_averages()}
                    row[f"{name}_kernels_ms"] = dict(sorted(per_kernel.items(), key=lambda it: -it[1])[:20])
                    row[f"{name}_kernels_sum_ms"] = round(sum(per_kernel.values()), 3)
            print(json.dumps(row), flush=True); rows.append(row)
            del kv, found
        del q, k, v, layer; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/search_ab.json", "w"), indent=1)
