"""sm_90 compile of a Gluon attention variant file (run 24: ``hopper_V.py`` from
``make_variants.sh``): :func:`compiled_variant`, :func:`sass_of`; as a script, the
big-ticket opcodes' run-length sequence (argv[2] given: the DEPBAR / HGMMA lines)."""
import importlib.util, sys, subprocess, pathlib, tempfile, re, itertools
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[5] / "tests"))
import test_compile_sm90 as T


def compiled_variant(path):
    """The variant file's ``_hopper_sparse_attention_kernel`` compiled for sm_90 as the
    default launch takes it (contiguous K/V, head dim 128, 3 stages, two consumers)."""
    from triton.experimental.gluon._runtime import GluonASTSource
    spec = importlib.util.spec_from_file_location("variant", path); m = importlib.util.module_from_spec(spec); sys.modules["variant"] = m; spec.loader.exec_module(m)
    paged, rows, tile = T.bulk_copy_tile(None, 128)
    pointers = dict(T.PLAN_POINTERS, q_ptr="*bf16", out_ptr="*bf16", lse_ptr="*fp32", k_desc=tile, v_desc=tile)
    constants = dict(PAGED=paged, PAGE_SIZE=1, HEAD_DIM=128, STAGES=3, WRITE_LSE=True, PING_PONG=False, num_warps=4)
    return T.compile_for_hopper(m._hopper_sparse_attention_kernel, pointers, constants, 4, source=GluonASTSource, maxnreg=m.MAX_REGISTERS)


def sass_of(c):
    """``cuobjdump -sass`` of compiled kernel ``c`` (Triton ships the tool)."""
    from triton.backends.nvidia import compiler
    tool = pathlib.Path(compiler.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"]); f.flush()
        return subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout


if __name__ == "__main__":
    sass = sass_of(compiled_variant(sys.argv[1]))
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
