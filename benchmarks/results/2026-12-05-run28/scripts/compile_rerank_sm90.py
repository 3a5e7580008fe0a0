"""The prototype re-rank kernel compiles for sm_90 (CPU, no GPU): python compile_rerank_sm90.py"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[3] / "tests")]
from rerank_kernel import _sampled_block_mass_kernel  # noqa: E402
from test_compile_sm90 import compile_for_hopper  # noqa: E402

for queries in (16, 32):
    compiled = compile_for_hopper(
        _sampled_block_mass_kernel,
        {"q": "*bf16", "k": "*bf16", "index": "*i32", "count": "*i32", "lse": "*fp32", "mass": "*fp32"},
        dict(GROUP=4, BLOCK=128, QUERIES=queries, HEAD_DIM=128, PRECISION="tf32"),
        num_warps=4,
    )
    ptx = compiled.asm["ptx"]
    print(queries, "queries: shared", compiled.metadata.shared, "B;",
          "mma" if "mma" in ptx else "no mma", "wgmma" if "wgmma" in ptx else "")
