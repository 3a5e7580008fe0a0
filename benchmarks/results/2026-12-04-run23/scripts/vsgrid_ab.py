"""Run 23: vsgrid's segment probes in one pass (main) against two (ff106df's
`kernels/`, loaded beside main's as `vllm_flexprefill.kernels_before`), interleaved
(four rounds, order alternating): the probes' masses alone (and main's at 16/32/64 key
blocks a program), then the whole vsgrid search (γ 0.96, no minimum budget, as
bench_kernels' vsgrid rows), outputs compared; main's search per kernel. Planted
inputs, one Llama-3.1-8B layer, 32K and 128K, contiguous and 128-token pages.
Usage, from /tmp: python DIR/vsgrid_ab.py BEFORE_KERNELS_DIR OUT"""
import importlib, importlib.util, json, os, statistics, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, planted
from bench_kernels import Layer, vsgrid_config
from vllm_flexprefill.kernels import SparsePlan
import vllm_flexprefill.kernels.search as search_main
import vllm_flexprefill.kernels.segment_probe as probe_main

before_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
spec = importlib.util.spec_from_file_location(
    "vllm_flexprefill.kernels_before", os.path.join(before_dir, "__init__.py"),
    submodule_search_locations=[before_dir])
package = importlib.util.module_from_spec(spec); sys.modules[spec.name] = package
spec.loader.exec_module(package)
search_before = importlib.import_module("vllm_flexprefill.kernels_before.search")
probe_before = importlib.import_module("vllm_flexprefill.kernels_before.segment_probe")
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


def masses_with(tiles, *args):
    probe_main.TILES_PER_PROGRAM = tiles
    try:
        return probe_main.segment_block_masses(*args)
    finally:
        probe_main.TILES_PER_PROGRAM = 32


config = vsgrid_config(0.96)
for n in [32768, 131072]:
    q, k, v = planted(n, seed=n)
    layer = Layer(q, k, v, [n], False)
    plan = SparsePlan.build([n], [n], B, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    for page in [None, 128]:
        try:
            kv = layer.kv(page)
            row = dict(tokens=n, page=page)
            probes_main = probe_main.SegmentProbes.build(plan)
            probes_before = probe_before.SegmentProbes.build(plan)
            old = probe_before.segment_block_masses(q, kv, plan, probes_before, SCALE)
            new = probe_main.segment_block_masses(q, kv, plan, probes_main, SCALE)
            row["masses_rel_error"] = float((new - old).norm() / old.norm())
            row["masses_max_abs"] = float((new - old).abs().max())
            fns = {"before": partial(probe_before.segment_block_masses, q, kv, plan, probes_before, SCALE)}
            for tiles in (16, 32, 64):
                fns[f"main_{tiles}"] = partial(masses_with, tiles, q, kv, plan, probes_main, SCALE)
            row["masses_ms"], _ = interleaved(fns)
            def find(name):
                return SEARCH[name].find_blocks(q, kv, plan, config, SCALE, dense)
            found = {name: find(name) for name in SEARCH}
            row["counts_equal"] = bool(torch.equal(found["main"].kv_count, found["before"].kv_count))
            row["pairs"] = {name: int(f.kv_count.sum()) for name, f in found.items()}
            row["lists_differ_rows"] = int((listed(found["main"]) != listed(found["before"])).any(-1).sum())
            row["patterns_equal"] = bool(torch.equal(found["main"].pattern, found["before"].pattern))
            row["search_ms"], row["search_rounds"] = interleaved({name: partial(find, name) for name in SEARCH})
            if page is None:
                find("main")
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        find("main")
                    torch.cuda.synchronize()
                per_kernel = {e.key: round(e.device_time_total / 5 / 1000, 4) for e in prof.key_averages()}
                row["main_kernels_ms"] = dict(sorted(per_kernel.items(), key=lambda it: -it[1])[:14])
                row["main_kernels_sum_ms"] = round(sum(per_kernel.values()), 3)
        except Exception as e:
            import traceback; traceback.print_exc()
            row["error"] = repr(e)
        print(json.dumps(row), flush=True)
        with open(os.path.join(out_dir, "vsgrid_ab.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        torch.cuda.empty_cache()
