"""Run 39: the launches Nsight Compute (``ncu``) profiles, twice each so that ncu can
skip the first (compilation, cold caches). ``attention``: the Hopper attention kernel
on run 33's 128K planted layer, the paper's γ 0.9, contiguous then 128-token pages
(``ab_common.cases``), each launched twice, all cases first once; ``mass``: head-wide
rerank's search at 64-token blocks, γ 0.938, run twice (its ``_sampled_mass_kernel``);
``search``: the paper's search at γ 0.9 on the same layer, once to compile, then once
between ``cudaProfilerStart`` and ``Stop`` (for ``ncu --profile-from-start off``).
Usage (GPU machine, ``scripts/`` and run 33's scripts on the path):
    python ncu_target.py attention|mass|search"""

import sys

import torch
from ab_common import cases, launch
from common import SCALE, Layer, paper_config, planted, vsgrid_config

import vllm_flexprefill.kernels.hopper_attention as hopper
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks

if sys.argv[1] == "attention":
    found_cases = list(cases())
    for _ in range(2):
        for _gamma, _page, q, kv, plan, found in found_cases:
            launch(hopper, q, kv, plan, found)
elif sys.argv[1] == "search":
    n = 131072
    q, k, v = planted(n, seed=n)
    kv = Layer(q, k, v, [n], fp8=False).kv(None)
    plan = SparsePlan.build([n], [n], 128, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    for profiled in (False, True):
        if profiled:
            torch.cuda.cudart().cudaProfilerStart()
        find_blocks(q, kv, plan, paper_config(0.9), SCALE, dense)
        torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
else:
    n = 131072
    head_wide = {"rerank_budget": "head"}
    config = vsgrid_config(0.938, "rerank", 64).with_overrides(head_wide)
    q, k, v = planted(n, seed=n)
    kv = Layer(q, k, v, [n], fp8=False).kv(None)
    plan = SparsePlan.build([n], [n], 64, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    for _ in range(2):
        find_blocks(q, kv, plan, config, q.shape[2] ** -0.5, dense)
        torch.cuda.synchronize()
print("done", sys.argv[1], flush=True)
