"""The search's radix select (top_mass) as the search calls it: its arguments captured
from one find_blocks call on planted inputs (one Llama-3.1-8B layer, 32K and 128K,
contiguous), then timed under launch variants (outputs compared with the default),
with every row inactive (what launching the grid alone costs), per pass (profiler),
and with the token rows and the grid rows as two calls. Usage, from /tmp:
python DIR/radix_context.py OUT"""
import json, os, sys
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from vllm_flexprefill.kernels import KVSource, SparsePlan
import vllm_flexprefill.kernels.search as search
from vllm_flexprefill.kernels.top_mass import TopMassLaunch, top_mass

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
SETTINGS = [(8192, 256, 4), (4096, 256, 4), (2048, 256, 4), (1024, 256, 4), (16384, 256, 4),
            (2048, 128, 4), (4096, 512, 8), (2048, 256, 2), (1024, 128, 2), (8192, 512, 8)]

def captured_args(q, kv, plan):
    calls = []
    def recorder(*args, **kwargs):
        calls.append((args, kwargs))
        return top_mass(*args, **kwargs)
    search.top_mass = recorder
    try:
        search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, torch.zeros(1, dtype=torch.bool, device="cuda"))
    finally:
        search.top_mass = top_mass
    return calls[0]

def per_pass_us(fn):
    fn(); torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn(); torch.cuda.synchronize()
    out = []
    for e in prof.events():
        if "radix" in e.name and e.device_type == torch.autograd.DeviceType.CUDA:
            out.append(round(e.time_range.elapsed_us(), 1))
    return out

rows = []
try:
    for n in [32768, 131072]:
        q, k, v = planted(n, seed=n)
        plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
        (scores, row_start, row_len, max_len, fraction, active), _ = captured_args(q, kv, plan)
        act = active.bool()
        row = dict(tokens=n, rows=int(row_start.shape[0]), active_rows=int(act.sum()),
                   active_entries=int(row_len[act].sum()), max_len=int(max_len),
                   row_lengths=sorted(set(row_len.tolist())))
        base = top_mass(scores, row_start, row_len, max_len, fraction, active)
        fn = partial(top_mass, scores, row_start, row_len, max_len, fraction, active)
        row["default_ms"] = bench(fn, warmup=10, rep=100)
        row["per_pass_us"] = per_pass_us(fn)
        idle = torch.zeros_like(active)
        row["all_inactive_ms"] = bench(partial(top_mass, scores, row_start, row_len, max_len, fraction, idle), warmup=10, rep=100)
        row["all_inactive_per_pass_us"] = per_pass_us(partial(top_mass, scores, row_start, row_len, max_len, fraction, idle))
        variants = {}
        for s in SETTINGS:
            launch = TopMassLaunch(*s)
            got = top_mass(scores, row_start, row_len, max_len, fraction, active, launch)
            same = all(torch.equal(a, b) for a, b in zip(base, got))
            close = all(torch.allclose(a.float(), b.float(), rtol=1e-5) for a, b in zip(base, got))
            ms = bench(partial(top_mass, scores, row_start, row_len, max_len, fraction, active, launch), warmup=10, rep=100)
            variants[str(s)] = dict(ms=ms, same=same, close=close)
        row["variants"] = variants
        # the token rows and the grid rows apart (their lengths differ 8x at 128K)
        t = 2 * q.shape[1]
        fr = fraction if not torch.is_tensor(fraction) else fraction
        def split():
            a = top_mass(scores, row_start[:t], row_len[:t], n, fr[:t] if torch.is_tensor(fr) else fr, active[:t])
            b = top_mass(scores, row_start[t:], row_len[t:], max_len, fr[t:] if torch.is_tensor(fr) else fr, active[t:])
            return a, b
        (a, b) = split()
        row["split_same"] = bool(torch.equal(torch.cat([a[0], b[0]]), base[0]) and torch.equal(torch.cat([a[1], b[1]]), base[1]))
        row["split_ms"] = bench(split, warmup=10, rep=100)
        print(json.dumps(row), flush=True); rows.append(row)
        del q, k, v, kv, scores; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/radix_context.json", "w"), indent=1)
