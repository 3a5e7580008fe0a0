"""Run 32: A = the Gluon attention kernel at 37abc39 (its causal mask if-converted into
every tile of the loop: ~180 more instructions a tile in the sm_90 machine code), P = the
package's (the diagonal tile peeled off the loop). 128K planted layer, paper γ 0.9,
contiguous and paged; outputs compared; timed interleaved, rounds alternating in order.
Usage (GPU machine, R = repository root): python hopper_ab_peel.py OUT_DIR"""
import importlib.util, json, sys, os, math, statistics
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, Layer, computed_flops
from vllm_flexprefill.kernels import SparsePlan, hopper_attention
from vllm_flexprefill.kernels.search import find_blocks

spec = importlib.util.spec_from_file_location(
    "vllm_flexprefill.kernels.hopper_A", f"{R}/.device/session/variants/hopper_A.py")
base = importlib.util.module_from_spec(spec); sys.modules[spec.name] = base
spec.loader.exec_module(base)
mods = {"A": base, "P": hopper_attention}
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rounds = int(os.environ.get("ROUNDS", "2"))
def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
n = 131072
q, k, v = planted(n, seed=n)
layer = Layer(q, k, v, [n], False)
plan = SparsePlan.build([n], [n], B, "cuda")
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
res = find_blocks(q, layer.kv(), plan, paper_config(0.9), SCALE, dense)
flops = computed_flops(res, q.shape[2])
summary = []
for page in [None, 128, 16]:
    kv = layer.kv(page)
    fns, outs = {}, {}
    for name, m in mods.items():
        o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
        lse = torch.full(q.shape[:2], float("nan"), device="cuda")
        fn = partial(m.hopper_sparse_attention, q, kv, plan, res.kv_index, res.kv_count,
                     SCALE * math.log2(math.e), o, lse, m.HopperLaunch(4, 3))
        fn(); torch.cuda.synchronize(); outs[name] = (o, lse); fns[name] = fn
    check = dict(rel_out=rel(outs["P"][0], outs["A"][0]),
                 max_lse_diff=(outs["P"][1] - outs["A"][1]).abs().max().item(),
                 nan=bool(outs["P"][0].isnan().any()))
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[name].append(bench(fns[name], warmup=10, rep=120))
    med = {name: statistics.median(t) for name, t in times.items()}
    row = dict(page=page, tflops_A=flops / med["A"] / 1e9, tflops_P=flops / med["P"] / 1e9,
               speedup_P=med["A"] / med["P"], ms=times, **check)
    print(json.dumps(row), flush=True); summary.append(row)
    del kv, fns, outs
json.dump(dict(device=torch.cuda.get_device_name(), git=os.environ.get("GIT_REV"),
               flops=flops, rows=summary), open(f"{out_dir}/ab_peel.json", "w"), indent=1)
