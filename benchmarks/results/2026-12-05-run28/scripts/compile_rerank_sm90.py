"""The prototype re-rank kernels compile for sm_90 (CPU, no GPU): python compile_rerank_sm90.py"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[3] / "tests")]
from rerank_kernel import _block_mass_kernel  # noqa: E402
from test_compile_sm90 import compile_for_hopper  # noqa: E402

POINTERS = {"q": "*bf16", "k": "*bf16", "index": "*i32", "member": "*i32", "count": "*i32",
            "lse": "*fp32", "mass": "*fp32"}
# (query heads a program, lists per KV head, member bits): per query head, KV-head-grouped
for heads, lists, members in ((1, 4, False), (4, 1, True)):
    for queries in (8, 16, 32):
        compiled = compile_for_hopper(
            _block_mass_kernel,
            POINTERS,
            dict(HEADS=heads, LISTS_PER_KV_HEAD=lists, MEMBERS=members, BLOCK=128,
                 QUERIES=queries, HEAD_DIM=128, PRECISION="tf32"),
            num_warps=4,
        )
        ptx = compiled.asm["ptx"]
        print(f"{heads} heads a program, {queries} queries: shared", compiled.metadata.shared,
              "B;", "wgmma" if "wgmma" in ptx else "mma" if "mma" in ptx else "no mma")
