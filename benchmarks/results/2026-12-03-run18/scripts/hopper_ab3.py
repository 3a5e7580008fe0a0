"""Attention kernel variants on one run's selections: A = main (a program per pair), Q = A with the queries brought by the loader (TMA), D = branch hopper-dynamic (persistent, items claimed by an atomic counter, Q by TMA, the next item's loads under this one's tail)."""
import importlib.util, json, sys, os
from functools import partial
here = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer, computed_flops
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks
import math

def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.hopper_{name}", f"{here}/variants/hopper_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod); return mod
mods = {n: load(n) for n in "AQD"}
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rows = []
def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
def case(label, q, layer, lens_q, lens_kv, gammas, pages):
    plan = SparsePlan.build(lens_q, lens_kv, B, "cuda")
    dense = torch.zeros(plan.num_requests, dtype=torch.bool, device="cuda")
    for gamma in gammas:
        res = find_blocks(q, layer.kv(), plan, paper_config(gamma), SCALE, dense)
        flops = computed_flops(res, q.shape[2])
        for page in pages:
            kv = layer.kv(page)
            outs = {}
            for name in "AQD":
                m = mods[name]
                launch = m.HopperLaunch(4, 3)
                assert m.supports(q, kv, B)
                o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
                lse = torch.full(q.shape[:2], float("nan"), device="cuda")
                fn = partial(m.hopper_sparse_attention, q, kv, plan, res.kv_index, res.kv_count, SCALE * math.log2(math.e), o, lse, launch)
                fn(); torch.cuda.synchronize(); outs[name] = (o.clone(), lse.clone())
                ms = bench(fn)
                row = dict(case=label, gamma=gamma, page=page, variant=name, ms=ms, tflops=flops / ms / 1e9)
                if name != "A":
                    row["rel_out_vs_A"] = rel(o, outs["A"][0]); row["max_lse_diff_vs_A"] = (lse - outs["A"][1]).abs().max().item()
                    row["nan_out"] = bool(o.isnan().any())
                print(json.dumps(row), flush=True); rows.append(row)
            del kv
        del res
    torch.cuda.empty_cache()
try:
    for n in [131072]:
        q, k, v = planted(n, seed=n)
        layer = Layer(q, k, v, [n], False)
        case(f"{n // 1024}K", q, layer, [n], [n], [0.9, 0.95], [None, 128, 16])
        del q, k, v, layer; torch.cuda.empty_cache()
    lens = [32768] * 4
    parts = [planted(n, i) for i, n in enumerate(lens)]
    q = torch.cat([p[0] for p in parts]); k = torch.cat([p[1] for p in parts]); v = torch.cat([p[2] for p in parts])
    case("4x32K", q, Layer(q, k, v, lens, False), lens, lens, [0.9], [None])
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/hopper_ab3.json", "w"), indent=1)
