"""A = main's Gluon kernel, L = the output rescaled only when a row's max grows past 2^8. Interleaved: four rounds, order alternating."""
import importlib.util, json, sys, os, math, statistics
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
here = os.path.dirname(os.path.abspath(__file__))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer, computed_flops
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks

def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.hopper_{name}", f"{here}/hopper_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod); return mod
mods = {n: load(n) for n in "AL"}
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rows = []; summary = []
def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
def case(label, q, layer, lens_q, lens_kv, gammas, pages):
    plan = SparsePlan.build(lens_q, lens_kv, B, "cuda")
    dense = torch.zeros(plan.num_requests, dtype=torch.bool, device="cuda")
    for gamma in gammas:
        res = find_blocks(q, layer.kv(), plan, paper_config(gamma), SCALE, dense)
        flops = computed_flops(res, q.shape[2])
        for page in pages:
            kv = layer.kv(page)
            fns, outs = {}, {}
            for name, m in mods.items():
                assert m.supports(q, kv, B)
                o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
                lse = torch.full(q.shape[:2], float("nan"), device="cuda")
                fn = partial(m.hopper_sparse_attention, q, kv, plan, res.kv_index, res.kv_count, SCALE * math.log2(math.e), o, lse, m.HopperLaunch(4, 3))
                fn(); torch.cuda.synchronize(); outs[name] = (o, lse); fns[name] = fn
            check = dict(rel_out=rel(outs["L"][0], outs["A"][0]), max_lse_diff=(outs["L"][1] - outs["A"][1]).abs().max().item(), nan=bool(outs["L"][0].isnan().any()))
            times = {n: [] for n in fns}
            for rnd in range(4):
                order = list(fns) if rnd % 2 == 0 else list(fns)[::-1]
                for name in order:
                    ms = bench(fns[name], warmup=10, rep=150)
                    times[name].append(ms)
                    rows.append(dict(case=label, gamma=gamma, page=page, variant=name, round=rnd, ms=ms, tflops=flops / ms / 1e9))
            med = {n: statistics.median(t) for n, t in times.items()}
            ratios = [a / o for a, o in zip(times["A"], times["L"])]
            s = dict(case=label, gamma=gamma, page=page, tflops_A=flops / med["A"] / 1e9, tflops_L=flops / med["L"] / 1e9, speedup_L=med["A"] / med["L"], round_ratios=ratios, **check)
            print(json.dumps(s), flush=True); summary.append(s)
            del kv, fns, outs
        del res
    torch.cuda.empty_cache()
try:
    n = 131072
    q, k, v = planted(n, seed=n)
    layer = Layer(q, k, v, [n], False)
    case("128K", q, layer, [n], [n], [0.9], [None, 128, 16])
    case("128K", q, layer, [n], [n], [0.95], [None, 128])
    del q, k, v, layer; torch.cuda.empty_cache()
    lens = [32768] * 4
    parts = [planted(n, i) for i, n in enumerate(lens)]
    q = torch.cat([p[0] for p in parts]); k = torch.cat([p[1] for p in parts]); v = torch.cat([p[2] for p in parts])
    case("4x32K", q, Layer(q, k, v, lens, False), lens, lens, [0.9], [None])
finally:
    json.dump(dict(meta=run_meta(), summary=summary, rows=rows), open(f"{out_dir}/hopper_ab_L.json", "w"), indent=1)
