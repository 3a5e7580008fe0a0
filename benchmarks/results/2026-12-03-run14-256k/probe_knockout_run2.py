"""Probe scores pass: launch and layout variants at 32K and 128K (scratch).
KO 0: as shipped; 64: the tile transposed (keys on axis 0); 2: no slash sums."""

import json, os, sys
from functools import partial

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
sys.path.insert(0, here)
import torch
from common import SCALE, B, bench, planted
from probe_ko import probe as probe_ko
from vllm_flexprefill.kernels import KVSource, SparsePlan
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


rows = []
for n in (131072, 32768):
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    base = probe(q, kv, plan, SCALE)
    for launch in [
        ProbeLaunch(*a)
        for a in [
            (8, 32, 4, 1),
            (8, 32, 2, 1),
            (8, 16, 2, 1),
            (8, 16, 1, 1),
            (4, 32, 2, 1),
            (8, 64, 4, 1),
            (8, 32, 8, 1),
            (16, 32, 4, 1),
            (8, 64, 8, 1),
        ]
    ]:
        for ko in (0, 64, 2):
            try:
                got = probe_ko(q, kv, plan, SCALE, launch, ko=ko)
                err = (
                    None
                    if ko == 2
                    else max(rel(got.tokens, base.tokens), rel(got.blocks, base.blocks))
                )
                ms = bench(
                    partial(probe_ko, q, kv, plan, SCALE, launch, ko=ko),
                    warmup=25,
                    rep=100,
                )
            except Exception as e:
                print(n, launch, ko, "ERR", str(e)[:200], flush=True)
                continue
            rows.append(dict(n=n, launch=str(launch), ko=ko, ms=ms, err=err))
            print(f"{n // 1024}K {launch} ko={ko}: {ms:.3f} ms err={err}", flush=True)
    torch.cuda.empty_cache()
json.dump(
    rows,
    open(os.path.join(os.environ.get("OUT", "/tmp"), "probe_ko2.json"), "w"),
    indent=1,
)
