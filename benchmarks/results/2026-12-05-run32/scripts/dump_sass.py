"""sm_90 SASS (stdout) and PTX (argv[2]) of a Gluon attention variant file (argv[1]).
Run 32: `python dump_sass.py VARIANT.py OUT.ptx > OUT.sass`, then `python loopstat.py OUT.sass`."""
import importlib.util, sys, subprocess, pathlib, tempfile
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4] / "tests"))
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
    print(subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout)
open(sys.argv[2], "w").write(c.asm["ptx"])
