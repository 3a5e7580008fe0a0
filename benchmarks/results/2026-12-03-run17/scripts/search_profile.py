import sys, os, json
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import torch
from common import B, planted, run_meta
from bench_search import search_profile
from vllm_flexprefill.kernels import KVSource, SparsePlan
rows = []
for n in [32768, 131072]:
    q, k, v = planted(n, seed=n)
    plan, kv = SparsePlan.build([n], [n], B, "cuda"), KVSource(k, v)
    rows.append(search_profile(q, kv, plan))
    del q, k, v; torch.cuda.empty_cache()
os.makedirs(sys.argv[1], exist_ok=True)
json.dump(dict(meta=run_meta(), rows=rows), open(os.path.join(sys.argv[1], "search_profile.json"), "w"), indent=1)
