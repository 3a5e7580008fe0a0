"""The host (CPU) time of one search, before (the `kernels/` package of 97297ac, loaded
beside main's) and main: the enqueue time of `find_blocks` with the GPU idle and
synchronised before each call (median of 30), its GPU time (`bench`), and a cProfile of
20 searches (the Python functions where the host time goes). Planted inputs, one
Llama-3.1-8B layer, paper γ 0.9, 32K and 128K. Usage, from /tmp:
python DIR/search_host.py BEFORE_KERNELS_DIR OUT"""
import cProfile, importlib, importlib.util, io, json, os, pstats, statistics, sys, time
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
import vllm_flexprefill.kernels.search as search_main

before_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
spec = importlib.util.spec_from_file_location(
    "vllm_flexprefill.kernels_before", os.path.join(before_dir, "__init__.py"),
    submodule_search_locations=[before_dir])
package = importlib.util.module_from_spec(spec); sys.modules[spec.name] = package
spec.loader.exec_module(package)
search_before = importlib.import_module("vllm_flexprefill.kernels_before.search")
SEARCH = {"before": search_before, "main": search_main}
rows = []
for n in [32768, 131072]:
    q, k, v = planted(n, seed=n)
    layer = Layer(q, k, v, [n], False)
    plan = SparsePlan.build([n], [n], B, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    kv = layer.kv(None)
    config = paper_config(0.9)
    for name, module in SEARCH.items():
        find = lambda: module.find_blocks(q, kv, plan, config, SCALE, dense)
        for _ in range(3):
            find()
        host = []
        for _ in range(30):
            torch.cuda.synchronize()
            start = time.perf_counter()
            find()
            host.append((time.perf_counter() - start) * 1e3)
        gpu = bench(find, warmup=5, rep=50)
        torch.cuda.synchronize()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            find()
        profiler.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(30)
        row = dict(tokens=n, search=name, host_ms=statistics.median(host), gpu_ms=gpu,
                   calls_per_search=stats.total_calls / 20)
        print(json.dumps(row), flush=True); rows.append(row)
        open(f"{out_dir}/cprofile_{n // 1024}K_{name}.txt", "w").write(text.getvalue())
    del q, k, v, layer, kv; torch.cuda.empty_cache()
json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/search_host.json", "w"), indent=1)
