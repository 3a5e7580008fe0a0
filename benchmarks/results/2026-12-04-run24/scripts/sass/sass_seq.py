import importlib.util, sys, subprocess, pathlib, tempfile, re, itertools
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[5] / "tests"))
import test_compile_sm90 as T
from triton.experimental.gluon._runtime import GluonASTSource
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("variant", path); m = importlib.util.module_from_spec(spec); sys.modules["variant"] = m; spec.loader.exec_module(m)
paged, rows, tile = T.bulk_copy_tile(None, 128)
pointers = dict(T.PLAN_POINTERS, q_ptr="*bf16", out_ptr="*bf16", lse_ptr="*fp32", k_desc=tile, v_desc=tile)
constants = dict(PAGED=paged, PAGE_SIZE=1, HEAD_DIM=128, STAGES=3, WRITE_LSE=True, PING_PONG=False, num_warps=4)
c = T.compile_for_hopper(m._hopper_sparse_attention_kernel, pointers, constants, 4, source=GluonASTSource, maxnreg=m.MAX_REGISTERS)
from triton.backends.nvidia import compiler
tool = pathlib.Path(compiler.__file__).parent / "bin" / "cuobjdump"
with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
    f.write(c.asm["cubin"]); f.flush()
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
ops = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
seq = [o for _, o in ops]
# run-length, only the big-ticket ops
keep = {"HGMMA", "FMUL", "MUFU", "FFMA", "FADD", "FMNMX", "F2FP", "WARPGROUP", "SYNCS", "BAR", "BRA", "WARPSYNC"}
out = []
for k, g in itertools.groupby(o for o in seq if o in keep):
    n = len(list(g)); out.append(f"{k}x{n}" if n > 1 else k)
print(" ".join(out))
if len(sys.argv) > 2:
    lines = [l for l in sass.splitlines() if "WARPGROUP" in l or "HGMMA" in l or "BRA" in l or "SYNCS" in l]
    print("\n".join(l.strip()[:120] for l in lines[:80]))
