"""What bounds the Gluon attention kernel (main's, variants/hopper_A.py)? The same kernel
timed on synthetic block lists at 128K (32/8 heads, d 128, contiguous and 128-token pages):
  - front-n: every pair lists blocks 0..n-2 and its diagonal (all pairs share the tiles: L2 best case)
  - local-n: the n blocks ending at the diagonal (neighbouring query blocks share n-1)
  - random-n: n-1 distinct random earlier blocks per (query head, block) + diagonal (little sharing)
  - random-kv-n: as random-n, one draw per KV head shared by its query heads
  - the real selection at gamma 0.9 (its mean count per pair is printed)
and dense causal at 32K against FA3 in the same run. The front sweep over n gives the per-pair
overhead (time = pairs * (a + b * tiles))."""
import importlib.util, json, sys, os, math
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
here = os.path.dirname(os.path.abspath(__file__))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta, fa3_ms
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks

spec = importlib.util.spec_from_file_location("vllm_flexprefill.kernels.hopper_A", f"{here}/variants/hopper_A.py")
m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)
launch = m.HopperLaunch(4, 3)
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rows = []

def flops_of(count):
    return 4.0 * B * B * 128 * (count.sum().item() - 0.5 * count.numel())

def run(label, q, kv, plan, index, count, **extra):
    o = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
    fn = partial(m.hopper_sparse_attention, q, kv, plan, index, count, SCALE * math.log2(math.e), o, None, launch)
    fn(); torch.cuda.synchronize()
    assert not o.isnan().any(), label
    ms = bench(fn)
    pairs = count.numel()
    row = dict(case=label, ms=ms, tflops=flops_of(count) / ms / 1e9, mean_tiles=count.float().mean().item(), us_per_pair_per_sm=ms * 1e3 * 132 / pairs, **extra)
    print(json.dumps(row), flush=True); rows.append(row)

def synthetic(kind, n, Hq, T, Hkv, gen):
    r = torch.arange(T, device="cuda")
    count = torch.clamp(r + 1, max=n).to(torch.int32).expand(Hq, T).contiguous()
    idx = torch.zeros(Hq, T, n, dtype=torch.int32, device="cuda")
    j = torch.arange(n, device="cuda")
    if kind == "front":
        body = j[None, :].expand(T, n)  # blocks 0..n-2 (only the first count-1 are read)
        idx[:] = body
    elif kind == "local":
        start = (r - count[0] + 1)[:, None]
        idx[:] = start + j[None, :]
    else:
        heads = Hq if kind == "random" else Hkv
        keys = torch.rand(heads, T, T, device="cuda", generator=gen)
        keys = keys.masked_fill(torch.arange(T, device="cuda")[None, None, :] >= r[None, :, None], 2.0)
        pick = keys.topk(n - 1, dim=-1, largest=False).indices.sort(-1).values.to(torch.int32)
        if heads != Hq:
            pick = pick.repeat_interleave(Hq // Hkv, 0)
        idx[:, :, : n - 1] = pick
    # the diagonal last
    idx.scatter_(2, (count - 1).long().unsqueeze(-1), r.to(torch.int32).expand(Hq, T).unsqueeze(-1).contiguous())
    return idx, count

try:
    n_tok = 131072
    q, k, v = planted(n_tok, seed=n_tok)
    layer = Layer(q, k, v, [n_tok], False)
    plan = SparsePlan.build([n_tok], [n_tok], B, "cuda")
    Hq, Hkv, T = q.shape[1], k.shape[1], plan.num_q_blocks
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    res = find_blocks(q, layer.kv(), plan, paper_config(0.9), SCALE, dense)
    mean = res.kv_count.float().mean().item()
    gen = torch.Generator(device="cuda"); gen.manual_seed(0)
    for page in [None, 128]:
        kv = layer.kv(page)
        run("real-0.9", q, kv, plan, res.kv_index, res.kv_count, page=page)
        n = round(mean)
        for kind in ["front", "local", "random", "random-kv"]:
            idx, cnt = synthetic(kind, n, Hq, T, Hkv, gen)
            run(f"{kind}-{n}", q, kv, plan, idx, cnt, page=page)
        run("real-0.9", q, kv, plan, res.kv_index, res.kv_count, page=page, rep=2)
        del kv
    kv = layer.kv()
    for n in [1, 2, 4, 8, 16, 32, 64, 128]:
        idx, cnt = synthetic("front", n, Hq, T, Hkv, gen)
        run(f"front-{n}", q, kv, plan, idx, cnt, page=None, sweep=True)
    del q, k, v, layer, kv, res; torch.cuda.empty_cache()
    # dense causal at 32K, against FA3
    n_tok = 32768
    q, k, v = planted(n_tok, seed=1)
    layer = Layer(q, k, v, [n_tok], False)
    plan = SparsePlan.build([n_tok], [n_tok], B, "cuda")
    T = plan.num_q_blocks
    idx, cnt = synthetic("front", T, Hq, T, Hkv, gen)
    run("dense-causal-32K", q, layer.kv(), plan, idx, cnt, page=None)
    fa = layer.fa3_ms([n_tok])
    row = dict(case="fa3-dense-causal-32K", ms=fa, tflops=flops_of(cnt) / fa / 1e9)
    print(json.dumps(row), flush=True); rows.append(row)
finally:
    json.dump(dict(meta=run_meta(), mean_real_count=mean, rows=rows), open(f"{out_dir}/hopper_bound.json", "w"), indent=1)
