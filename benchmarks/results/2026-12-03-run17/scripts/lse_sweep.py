"""The probe (both passes) under other SPLIT_TOKENS (keys per program of the LSE pass) and LSE stages."""
import sys, os, json
from functools import partial
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import torch
from common import SCALE, B, bench, planted, run_meta
from vllm_flexprefill.kernels import KVSource, SparsePlan
from vllm_flexprefill.kernels import probe as P
rows = []
for n in [131072, 262144]:
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    for split in [8192, 4096, 2048, 16384]:
        for stages in [3, 2, 4]:
            P.SPLIT_TOKENS = split
            P.lse_stages = lambda d, s=stages: s
            try:
                ms = bench(partial(P.probe, q, kv, plan, SCALE), warmup=25, rep=150)
            except Exception as e:
                print(split, stages, "error", str(e)[:200]); continue
            row = dict(tokens=n, split=split, stages=stages, probe_ms=ms); rows.append(row); print(json.dumps(row), flush=True)
    del q, k, v; torch.cuda.empty_cache()
os.makedirs(sys.argv[1], exist_ok=True)
json.dump(dict(meta=run_meta(), rows=rows), open(os.path.join(sys.argv[1], "lse_sweep.json"), "w"), indent=1)
