"""Scores-pass variants: A = main (c9d175b+, a [SLAB, BLOCK] gather), T = branch probe-subtile-skew ([SLAB, SLAB] sub-tile gathers); each also with registers capped."""
import importlib.util, json, sys, os
from functools import partial
here0 = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, os.path.join(here0, "..", "..", "scripts"))
import torch
from common import SCALE, B, bench, planted, run_meta
from vllm_flexprefill.kernels import KVSource, SparsePlan

here = os.path.dirname(os.path.abspath(__file__))
def load(name):
    spec = importlib.util.spec_from_file_location(f"vllm_flexprefill.kernels.probe_{name}", f"{here}/variants/probe_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod); return mod
mods = {n: load(n) for n in "AT"}
out = sys.argv[1]
rows = []
def rel(a, b): return ((a - b).norm() / b.norm()).item()
for n in [32768, 131072, 262144]:
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    base = mods["A"].probe(q, kv, plan, SCALE)
    cases = [("A", ()), ("T", ()), ("A", (8, 16, 4, 1, 128)), ("T", (8, 16, 4, 1, 128)), ("T", (8, 32, 4, 1, 168)), ("T", (8, 32, 4, 1, 128)), ("T", (8, 16, 4, 1)), ("T", (8, 32, 8, 1))]
    for name, bpp in cases:
        m = mods[name]
        launch = m.ProbeLaunch(*bpp)
        got = m.probe(q, kv, plan, SCALE, launch)
        err = max(rel(getattr(got, f), getattr(base, f)) for f in ("tokens", "vertical_blocks", "slash_blocks"))
        ms = bench(partial(m.probe, q, kv, plan, SCALE, launch), warmup=25, rep=200)
        row = dict(tokens=n, variant=name, bpp=bpp, probe_ms=ms, rel_error_vs_A=err)
        print(json.dumps(row), flush=True); rows.append(row)
    del q, k, v, plan, kv, base; torch.cuda.empty_cache()
os.makedirs(out, exist_ok=True)
json.dump(dict(meta=run_meta(), rows=rows), open(f"{out}/probe_ab.json", "w"), indent=1)
