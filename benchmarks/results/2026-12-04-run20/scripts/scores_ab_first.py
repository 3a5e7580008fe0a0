"""The probe's scores pass: H = the warp-specialised Hopper kernel (this revision's
default), P = the portable kernel (ProbeLaunch.hopper_scores False); both with the
Hopper log-sum-exp statistics. The probe alone and whole searches (paper gamma 0.9,
planted inputs, contiguous and 128-token pages), timed interleaved (four rounds, order
alternating); probe outputs and block counts compared; blocks a program swept at 128K;
a per-kernel profile at 128K."""
import dataclasses, json, sys, os, statistics
from functools import partial
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe
import vllm_flexprefill.kernels.search as search

out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
rows = []
H = ProbeLaunch.default(128, quantised=False)
LAUNCHES = {"H": H, "P": dataclasses.replace(H, hopper_scores=False)}
def profile(fn):
    fn(); torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5): fn()
        torch.cuda.synchronize()
    per = {e.key: e.device_time_total / 5 / 1000 for e in prof.key_averages()}
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda i: -i[1])[:10]}
def interleaved(fns, rep=100):
    times = {n: [] for n in fns}
    for rnd in range(4):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            times[name].append(bench(fns[name], warmup=10, rep=rep))
    return {n: statistics.median(t) for n, t in times.items()}, times
def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
try:
    for n in [32768, 131072]:
        q, k, v = planted(n, seed=n)
        layer = Layer(q, k, v, [n], False)
        plan = SparsePlan.build([n], [n], B, "cuda")
        dense = torch.zeros(1, dtype=torch.bool, device="cuda")
        for page in [None, 128]:
            kv = layer.kv(page)
            searches, probes, results = {}, {}, {}
            for name, launch in LAUNCHES.items():
                probes[name] = partial(probe, q, kv, plan, SCALE, launch)
                def run(launch=launch):
                    search.probe = partial(probe, launch=launch)
                    return search.find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
                searches[name] = run
                results[name] = run()
                results[name + "_probe"] = probes[name]()
            again = probes["H"]()
            err = {f: rel(getattr(results["H_probe"], f), getattr(results["P_probe"], f)) for f in ("tokens", "blocks", "probe_mean")}
            row = dict(tokens=n, page=page, probe_rel_err_H_vs_P=err,
                       H_deterministic=bool(torch.equal(again.tokens, results["H_probe"].tokens) and torch.equal(again.blocks, results["H_probe"].blocks)),
                       count_diff=int((results["H"].kv_count - results["P"].kv_count).abs().sum()),
                       total_count=int(results["P"].kv_count.sum()))
            print(json.dumps(row), flush=True)
            p_med, p_all = interleaved(probes)
            s_med, s_all = interleaved(searches)
            row.update(probe_ms=p_med, search_ms=s_med, probe_rounds=p_all, search_rounds=s_all)
            if n == 131072 and page is None:
                row["profile_H"] = profile(searches["H"]); row["profile_P"] = profile(searches["P"])
                sweep = {bpp: partial(probe, q, kv, plan, SCALE, dataclasses.replace(H, hopper_blocks_per_program=bpp)) for bpp in (8, 16, 32, 64)}
                row["blocks_per_program_probe_ms"], _ = interleaved(sweep)
            print(json.dumps(row), flush=True); rows.append(row)
            del kv, results
        del q, k, v, layer; torch.cuda.empty_cache()
finally:
    json.dump(dict(meta=run_meta(), rows=rows), open(f"{out_dir}/scores_ab.json", "w"), indent=1)
