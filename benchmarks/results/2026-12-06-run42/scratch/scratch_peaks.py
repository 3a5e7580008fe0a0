"""Peak scratch of one step's sparse path vs workspace.workspace_bytes (the amount the
profiling pass reserves), for legal worst-case-shaped steps. GPU (or tiny on CPU)."""
import os, sys, json
import torch
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.kernels import KVSource, SparsePlan, flex_prefill_forward
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = dev.type == "cpu"
Hq, Hkv, D = (2, 1, 16) if SMALL else (32, 8, 128)
STEP = 512 if SMALL else 8192
MAXLEN = 1024 if SMALL else 32768
PAGE = 128
def case(B, selection, budget="row", R=None, q=None, kvl=None, off=64):
    R = R or max(1, min(256, STEP // B))
    q = q or STEP // R
    kvl = kvl or MAXLEN - off
    pages = -(-kvl // PAGE)
    cache = torch.randn(pages + 1, 2, PAGE, Hkv, D, dtype=torch.bfloat16 if not SMALL else torch.float32, device=dev)
    table = torch.arange(1, pages + 1, dtype=torch.int32, device=dev).repeat(R, 1)  # shared prefix pages
    plan = SparsePlan.build([q] * R, [kvl] * R, B, dev, table_rows=list(range(R)))
    cfg = FlexPrefillConfig(block_size=B, selection=selection, rerank_budget=budget, min_budget=B, max_density=0.6, dense_threshold=0)
    qt = torch.randn(q * R, Hq, D, dtype=cache.dtype, device=dev)
    out = torch.empty_like(qt)
    dense = torch.zeros(R, dtype=torch.bool, device=dev)
    kv = KVSource(cache[:, 0], cache[:, 1], table)
    flex_prefill_forward(qt, kv, plan, cfg, D ** -0.5, dense, out)  # compile
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    flex_prefill_forward(qt, kv, plan, cfg, D ** -0.5, dense, out)
    peak = (torch.cuda.max_memory_allocated() - base) if dev.type == "cuda" else -1
    print(json.dumps(dict(B=B, sel=selection, budget=budget, R=R, q=q, kv=kvl, peak_MiB=round(peak / 2**20, 1), peak=peak)), flush=True)
cases = sys.argv[1:] or ["128:paper", "128:vsgrid", "128:rerank:head", "64:vsgrid", "64:rerank:head"]
for c in cases:
    p = c.split(":")
    case(int(p[0]), p[1], *(p[2:3] or ["row"]))
if dev.type == "cuda":
    for c in ["128:vsgrid"]:
        p = c.split(":")
        case(int(p[0]), p[1], *(p[2:3] or ["row"]), R=1, q=STEP, kvl=MAXLEN, off=0)
