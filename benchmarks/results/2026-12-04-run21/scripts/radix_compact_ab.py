"""The radix select with compact lists against reading every row whole, as the search
calls it (arguments captured from one find_blocks call on planted inputs, one
Llama-3.1-8B layer, 32K and 128K, contiguous), interleaved (four rounds, order
alternating), outputs compared; the same rows refilled near-uniform (every row falls
back to whole reads); and the whole search with each launch. Usage, from /tmp:
python DIR/radix_compact_ab.py OUT"""
import json, os, statistics, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from vllm_flexprefill.kernels import KVSource, SparsePlan
import vllm_flexprefill.kernels.search as search
from vllm_flexprefill.kernels.top_mass import TopMassLaunch, top_mass

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
LAUNCHES = {"whole": TopMassLaunch(compact_pass=None), "c2k4": TopMassLaunch(compact_pass=2, keep=4),
            "c2k8": TopMassLaunch(compact_pass=2, keep=8), "c3k8": TopMassLaunch(compact_pass=3, keep=8),
            "c3k16": TopMassLaunch(compact_pass=3, keep=16), "c1k2": TopMassLaunch(compact_pass=1, keep=2)}

def interleaved(fns, rep=100):
    times = {n: [] for n in fns}
    for rnd in range(4):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            times[name].append(bench(fns[name], warmup=10, rep=rep))
    return {n: statistics.median(t) for n, t in times.items()}, times

def per_pass_us(fn):
    fn(); torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn(); torch.cuda.synchronize()
    return [round(e.time_range.elapsed_us(), 1) for e in prof.events()
            if "radix" in e.name and e.device_type == torch.autograd.DeviceType.CUDA]

def compare(a, b):
    return dict(counts_equal=bool(torch.equal(a[0], b[0])), count_max_diff=int((a[0] - b[0]).abs().max()),
                thresholds_equal=bool(torch.equal(a[1], b[1])))

rows = []
try:
    for n in [32768, 131072]:
        q, k, v = planted(n, seed=n)
        plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
        calls = []
        def recorder(*args, **kwargs):
            calls.append(args); return top_mass(*args, **kwargs)
        search.top_mass = recorder
        dense = torch.zeros(1, dtype=torch.bool, device="cuda")
        search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
        search.top_mass = top_mass
        args = calls[0]
        for kind in ["planted", "near-uniform"]:
            if kind == "near-uniform":
                scores = args[0]
                g = torch.Generator(device="cuda").manual_seed(n)
                scores = 1.0 + 0.05 * torch.rand(scores.shape, generator=g, device="cuda")
                args = (scores,) + args[1:]
            outs = {name: top_mass(*args, launch=launch) for name, launch in LAUNCHES.items()}
            row = dict(tokens=n, kind=kind, vs_whole={name: compare(o, outs["whole"]) for name, o in outs.items()})
            row["ms"], row["rounds"] = interleaved({name: partial(top_mass, *args, launch=launch) for name, launch in LAUNCHES.items()})
            row["per_pass_us"] = {name: per_pass_us(partial(top_mass, *args, launch=launch)) for name, launch in LAUNCHES.items()}
            print(json.dumps(row), flush=True); rows.append(row)
        # the whole search, with the default (compact lists) and with whole rows
        def find(launch):
            search.top_mass = partial(top_mass, launch=launch)
            try:
                return search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
            finally:
                search.top_mass = top_mass
        pair = {"default": TopMassLaunch(), "whole": LAUNCHES["whole"]}
        found = {name: find(launch) for name, launch in pair.items()}
        row = dict(tokens=n, kind="search", default=str(TopMassLaunch()),
                   count_diff=int((found["default"].kv_count - found["whole"].kv_count).abs().sum()),
                   index_equal=bool(torch.equal(found["default"].kv_index, found["whole"].kv_index)))
        row["search_ms"], row["search_rounds"] = interleaved({name: partial(find, launch) for name, launch in pair.items()})
        print(json.dumps(row), flush=True); rows.append(row)
        del q, k, v, kv, calls, args; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/radix_compact_ab.json", "w"), indent=1)
