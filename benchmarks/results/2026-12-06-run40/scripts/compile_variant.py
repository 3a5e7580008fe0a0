"""Run 40 (CPU): a variant's ``hopper_attention.py`` compiled for sm_90 through the
launch matrix of ``tests/test_compile_sm90.py``'s Hopper attention checks (shared
memory, wgmma, bulk copies, registers and spills asserted there), in place of the
installed module; prints ok or FAIL per case.
Usage: python compile_variant.py KERNELS_DIR   (a copy of kernels/, apply_variant.py)"""

import importlib.util
import sys
import traceback
from pathlib import Path

import vllm_flexprefill.kernels as package

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))
NAME = "vllm_flexprefill.kernels.hopper_attention"
spec = importlib.util.spec_from_file_location(
    NAME, Path(sys.argv[1]) / "hopper_attention.py"
)
variant = importlib.util.module_from_spec(spec)
sys.modules[NAME] = variant
spec.loader.exec_module(variant)
package.hopper_attention = variant

from test_compile_sm90 import hopper_attention_compiles as compiles  # noqa: E402

CASES = {
    "contiguous-128": lambda: compiles(None, 128),
    "paged16-128": lambda: compiles(16, 128),
    "paged128-64": lambda: compiles(128, 64),
    "default-paged16-128": lambda: compiles(16, 128, num_warps=4, stages=3),
    "ping-pong-128": lambda: compiles(128, 128, num_warps=4, stages=3, ping_pong=True),
    "block64-contiguous-128": lambda: compiles(
        None, 128, num_warps=4, stages=3, block=64
    ),
    "block64-paged16-128": lambda: compiles(16, 128, num_warps=4, stages=3, block=64),
    "block64-paged128-128": lambda: compiles(128, 128, num_warps=4, stages=3, block=64),
}
for name, case in CASES.items():
    try:
        case()
        print("ok", name, flush=True)
    except Exception:
        print("FAIL", name, traceback.format_exc().splitlines()[-3:], flush=True)
