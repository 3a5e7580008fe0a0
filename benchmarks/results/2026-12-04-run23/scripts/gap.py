"""Where does bench_kernels' total exceed search + attention at 128K gamma 0.9?
Interleaved rounds of the three benches in both orders, the total's parts timed by
events inside one call, and the SM clock (NVML) around each."""
import json, sys, statistics, os
sys.path.insert(0, os.environ["R"] + "/scripts")
import torch, triton
from functools import partial
from common import LAYERS, B, bench, paper_config, planted
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention

def clock():
    try:
        return torch.cuda.clock_rate()
    except Exception as e:
        return str(e)

n = 131072
layer = Layer(*planted(n, n, LAYERS["llama-3.1-8b"]), [n], False)
plan = SparsePlan.build([n], [n], B, "cuda")
config = paper_config(0.9)
q = layer.q; kv = layer.kv()
scale = q.shape[2] ** -0.5
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
out = torch.empty(q.shape, dtype=torch.bfloat16, device="cuda")
search = partial(find_blocks, q, kv, plan, config, scale, dense, None)
def attend(res):
    block_sparse_attention(q, kv, plan, res.kv_index, res.kv_count, scale, out)
res = search(); attend(res); torch.cuda.synchronize()
benches = {"search": search, "attention": partial(attend, res), "total": lambda: attend(search())}
log = []
for rnd in range(4):
    order = ["search", "attention", "total"] if rnd % 2 == 0 else ["total", "attention", "search"]
    for name in order:
        c0 = clock(); ms = bench(benches[name]); c1 = clock()
        log.append(dict(round=rnd, name=name, ms=ms, clock_before=c0, clock_after=c1))
        print(json.dumps(log[-1]), flush=True)
# the total's parts inside one call, as do_bench runs it (L2 flushed before each)
cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
parts = {"search": [], "attention": [], "total": []}
for it in range(60):
    cache.zero_()
    e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    e[0].record(); r = search(); e[1].record(); attend(r); e[2].record()
    torch.cuda.synchronize()
    if it >= 10:
        parts["search"].append(e[0].elapsed_time(e[1]))
        parts["attention"].append(e[1].elapsed_time(e[2]))
        parts["total"].append(e[0].elapsed_time(e[2]))
print(json.dumps({"inside_total_median": {k: statistics.median(v) for k, v in parts.items()}, "clock": clock()}), flush=True)
# the same with the search's outputs reused (attention of a fixed result after a search)
parts = {"search": [], "attention": []}
for it in range(60):
    cache.zero_()
    e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    e[0].record(); search(); e[1].record(); attend(res); e[2].record()
    torch.cuda.synchronize()
    if it >= 10:
        parts["search"].append(e[0].elapsed_time(e[1]))
        parts["attention"].append(e[1].elapsed_time(e[2]))
print(json.dumps({"search_then_fixed_attention": {k: statistics.median(v) for k, v in parts.items()}, "clock": clock()}), flush=True)
