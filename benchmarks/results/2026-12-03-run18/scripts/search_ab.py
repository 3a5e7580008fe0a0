"""Whole searches with kernel variants swapped in: probe A (main) / T (probe-subtile-skew) x top_mass A (main) / R (radix-early-resolve). Time, equality of the block index with the A/A search, and a per-kernel profile."""
import importlib.util, json, sys, os
from functools import partial
here = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from vllm_flexprefill.kernels import KVSource, SparsePlan
import vllm_flexprefill.kernels.search as search

def load(stem, name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.{stem}_{name}", f"{here}/variants/{stem}_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod); return mod
probes = {n: load("probe", n) for n in "AT"}
radix = {n: load("top_mass", n) for n in "AR"}
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rows = []
def profile(fn):
    fn(); torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5): fn()
        torch.cuda.synchronize()
    per = {e.key: e.device_time_total / 5 / 1000 for e in prof.key_averages()}
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda i: -i[1])[:8]}
try:
    for n in [32768, 131072, 262144]:
        q, k, v = planted(n, seed=n)
        plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
        dense = torch.zeros(1, dtype=torch.bool, device="cuda")
        base = None
        for p_name, r_name, launch in [("A", "A", None), ("T", "A", None), ("A", "R", None), ("T", "R", None), ("T", "R", (8, 16, 4, 1, 128)), ("A", "R", (8, 16, 4, 1, 128))]:
            pm = probes[p_name]
            probe_fn = pm.probe if launch is None else partial(pm.probe, launch=pm.ProbeLaunch(*launch))
            search.probe = probe_fn
            search.top_mass = radix[r_name].top_mass
            fn = partial(search.find_blocks, q, kv, plan, paper_config(0.9), SCALE, dense)
            res = fn()
            if base is None: base = res
            same = torch.equal(res.kv_count, base.kv_count) and all(torch.equal(res.kv_index[h, g, :c], base.kv_index[h, g, :c]) for h, g, c in [(0, plan.num_q_blocks - 1, int(base.kv_count[0, -1])), (31, plan.num_q_blocks // 2, int(base.kv_count[31, plan.num_q_blocks // 2]))])
            row = dict(tokens=n, probe=p_name, top_mass=r_name, probe_launch=launch, search_ms=bench(fn), same_counts_as_AA=same,
                       count_diff=int((res.kv_count - base.kv_count).abs().sum()), kernels_ms=profile(fn) if n == 131072 else None)
            print(json.dumps(row), flush=True); rows.append(row)
        del q, k, v, plan, kv, base, res; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/search_ab.json", "w"), indent=1)
