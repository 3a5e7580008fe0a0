"""Attention kernel variants on one run's selections, each timed twice, interleaved:
A = main (1f6a3ae); C = the loader reading each block's number and first page one block
ahead; G = C launched with group_heads (a KV head's query heads side by side)."""
import importlib.util, json, sys, os, math
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
here = os.path.dirname(os.path.abspath(__file__))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer, computed_flops
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks

def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.hopper_{name}", f"{here}/variants/hopper_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod); return mod
mA, mC = load("A"), load("C")
VARIANTS = [("A", mA, mA.HopperLaunch(4, 3)), ("C", mC, mC.HopperLaunch(4, 3)), ("G", mC, mC.HopperLaunch(4, 3, group_heads=True))]
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
            ref = None
            for rep in range(2):
                for name, m, launch in VARIANTS:
                    assert m.supports(q, kv, B)
                    o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
                    lse = torch.full(q.shape[:2], float("nan"), device="cuda")
                    fn = partial(m.hopper_sparse_attention, q, kv, plan, res.kv_index, res.kv_count, SCALE * math.log2(math.e), o, lse, launch)
                    fn(); torch.cuda.synchronize()
                    ms = bench(fn)
                    row = dict(case=label, gamma=gamma, page=page, variant=name, rep=rep, ms=ms, tflops=flops / ms / 1e9)
                    if ref is None:
                        ref = (o.clone(), lse.clone())
                    else:
                        row["rel_out_vs_A"] = rel(o, ref[0]); row["max_lse_diff_vs_A"] = (lse - ref[1]).abs().max().item()
                        row["nan_out"] = bool(o.isnan().any())
                    print(json.dumps(row), flush=True); rows.append(row)
            del kv
        del res
    torch.cuda.empty_cache()
try:
    n = 131072
    q, k, v = planted(n, seed=n)
    layer = Layer(q, k, v, [n], False)
    case("128K", q, layer, [n], [n], [0.9, 0.95], [None, 128, 16])
    del q, k, v, layer; torch.cuda.empty_cache()
    lens = [32768] * 4
    parts = [planted(n, i) for i, n in enumerate(lens)]
    q = torch.cat([p[0] for p in parts]); k = torch.cat([p[1] for p in parts]); v = torch.cat([p[2] for p in parts])
    case("4x32K", q, Layer(q, k, v, lens, False), lens, lens, [0.9], [None, 128])
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/hopper_ab5.json", "w"), indent=1)
    import collections
    agg = collections.defaultdict(list)
    for r in rows: agg[(r["case"], r["gamma"], r["page"], r["variant"])].append(r["tflops"])
    for key, v in agg.items(): print(key, " ".join(f"{x:.1f}" for x in v))
