"""sm_90 compile of a Gluon attention variant file: SASS instruction counts."""
import importlib.util, sys, subprocess, pathlib, tempfile, collections, re
sys.path.insert(0, "/work/main/tests")
import test_compile_sm90 as T
from triton.experimental.gluon._runtime import GluonASTSource
path = sys.argv[1]; page = None if sys.argv[2] == "none" else int(sys.argv[2])
spec = importlib.util.spec_from_file_location("variant", path); m = importlib.util.module_from_spec(spec); sys.modules["variant"] = m; spec.loader.exec_module(m)
paged, rows, tile = T.bulk_copy_tile(page, 128)
pointers = dict(T.PLAN_POINTERS, q_ptr="*bf16", out_ptr="*bf16", lse_ptr="*fp32", k_desc=tile, v_desc=tile)
constants = dict(PAGED=paged, PAGE_SIZE=page or 1, HEAD_DIM=128, STAGES=3, WRITE_LSE=True, PING_PONG=False, num_warps=4)
c = T.compile_for_hopper(m._hopper_sparse_attention_kernel, pointers, constants, 4, source=GluonASTSource, maxnreg=m.MAX_REGISTERS)
from triton.backends.nvidia import compiler
tool = pathlib.Path(compiler.__file__).parent / "bin" / "cuobjdump"
with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
    f.write(c.asm["cubin"]); f.flush()
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    print(subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout.strip()[-300:])
ops = collections.Counter(re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass))
print(sum(ops.values()), {k: ops[k] for k in ("FMUL", "FFMA", "FADD", "FMNMX", "MUFU", "BAR", "SHFL", "BRA", "STS", "LDS", "HGMMA", "WARPGROUP")})
