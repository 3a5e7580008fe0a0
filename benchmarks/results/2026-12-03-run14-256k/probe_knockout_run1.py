"""Knock-out timing of the probe's scores pass (scratch, not committed).
KO bits: 1 no exp2, 2 no skew (gather) and slash sums, 4 no row masses, 16 no column
sums, 32 a gather-free stand-in for the slash sums."""

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

rows = []
for n in (32768, 131072):
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    base = probe(q, kv, plan, SCALE)
    for launch in (
        ProbeLaunch(),
        ProbeLaunch(1, None, 8, 1),
        ProbeLaunch(4, 64, 8, 1),
        ProbeLaunch(8, 16, 4, 1),
    ):
        for ko in (0, 1, 2, 4, 16, 6, 23, 34):
            try:
                ms = bench(
                    partial(probe_ko, q, kv, plan, SCALE, launch, ko=ko),
                    warmup=25,
                    rep=100,
                )
            except Exception as e:
                print(n, launch, ko, "ERR", str(e)[:200], flush=True)
                continue
            err = None
            if ko == 0:
                got = probe_ko(q, kv, plan, SCALE, launch, ko=0)
                err = ((got.tokens - base.tokens).norm() / base.tokens.norm()).item()
            rows.append(dict(n=n, launch=str(launch), ko=ko, ms=ms, err=err))
            print(f"{n // 1024}K {launch} ko={ko}: {ms:.3f} ms err={err}", flush=True)
    # LSE pass alone: every scores block knocked out is not possible; time probe with 0 score programs
    torch.cuda.empty_cache()
json.dump(
    rows,
    open(os.path.join(os.environ.get("OUT", "/tmp"), "probe_ko.json"), "w"),
    indent=1,
)
