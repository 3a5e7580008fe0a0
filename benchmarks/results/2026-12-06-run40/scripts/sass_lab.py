"""Run 40 (CPU): the Hopper attention kernel's machine code for sm_90, compiled here
(no GPU), summarised per version: the instructions of its hottest loop (the block whose
backward branch closes a run of ``HGMMA``) by opcode, and the longest dependency chain
of ``FMNMX`` and of ``FADD`` in it (each instruction one step; a chain is the
instructions that read the previous one's result). Each NAME=DIR is a copy of the
``kernels/`` package (``apply_variant.py``); ``main`` is the working tree's.
Usage: python sass_lab.py [NAME=DIR ...] [--dump DIR]"""

import collections
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))
from test_compile_sm90 import bulk_copy_tile, compile_for_hopper  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402


def load(name: str, directory: Path):
    spec = importlib.util.spec_from_file_location(
        f"lab_{name}",
        directory / "__init__.py",
        submodule_search_locations=[str(directory)],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(
        f"lab_{name}.hopper_attention"
    ), importlib.import_module(f"lab_{name}.hopper_common")


def sass(attention, common, block=128, head_dim=128) -> str:
    paged, rows, tile = bulk_copy_tile(None, head_dim, block)
    pointers = {
        n: "*i32"
        for n in (
            "req_q_start", "req_q_len", "req_kv_len", "req_k_start", "req_table_row",
            "block_request", "block_row", "index_ptr", "count_ptr", "table_ptr",
        )
    }  # fmt: skip
    pointers |= dict(
        q_ptr="*bf16", out_ptr="*bf16", lse_ptr="*fp32", k_desc=tile, v_desc=tile
    )
    constants = dict(
        PAGED=False, PAGE_SIZE=1, HEAD_DIM=head_dim, BLOCK=block, STAGES=3,
        WRITE_LSE=True, PING_PONG=False, num_warps=4,
    )  # fmt: skip
    compiled = compile_for_hopper(
        attention._hopper_sparse_attention_kernel, pointers, constants, 4,
        source=GluonASTSource, maxnreg=common.MAX_REGISTERS,
    )  # fmt: skip
    from triton.backends.nvidia import compiler

    tool = Path(compiler.__file__).parent / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run(
            [tool, "-c", f.name], capture_output=True, text=True, check=True
        ).stdout


LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def loops(text: str):
    """[(start, end, instructions)] of every backward branch's block."""
    code = [(int(a, 16), ins.strip()) for a, ins in LINE.findall(text)]
    out = []
    for addr, ins in code:
        target = re.search(r"BRA .*?(0x[0-9a-f]+|`\(\.L_x_(\d+)\))", ins)
        if not target:
            continue
        if target.group(1).startswith("0x"):
            dest = int(target.group(1), 16)
        else:
            label = re.search(
                rf"\.L_x_{target.group(2)}:\s*\n\s*/\*([0-9a-f]+)\*/", text
            )
            dest = int(label.group(1), 16) if label else addr + 1
        if dest < addr:
            out.append((dest, addr, [x for a, x in code if dest <= a <= addr]))
    return out


def chain(body, opcode):
    depth = {}
    longest = 0
    for ins in body:
        ins = re.sub(r"^@!?U?P\w+\s+", "", ins)
        parts = ins.split(None, 1)
        if len(parts) < 2:
            continue
        op, args = parts[0].split(".")[0], parts[1]
        regs = re.findall(r"\bR\d+\b", args)
        if not regs:
            continue
        dest, srcs = regs[0], regs[1:]
        if op == opcode:
            d = 1 + max((depth.get(s, 0) for s in srcs), default=0)
            depth[dest] = d
            longest = max(longest, d)
        else:
            depth.pop(dest, None)
    return longest


def summary(text: str) -> dict:
    hot = [lp for lp in loops(text) if sum("HGMMA" in x for x in lp[2]) >= 8]
    start, end, body = min(hot, key=lambda lp: len(lp[2]))
    ops = collections.Counter(
        re.sub(r"^@!?U?P\w+\s+", "", x).split()[0].split(".")[0] for x in body
    )
    return {
        "loop": f"{start:#x}-{end:#x}",
        "instructions": len(body),
        "chain_FMNMX": chain(body, "FMNMX"),
        "chain_FADD": chain(body, "FADD"),
        "ops": dict(ops.most_common(14)),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    dump = None
    if "--dump" in args:
        dump = Path(args[args.index("--dump") + 1])
        del args[args.index("--dump") : args.index("--dump") + 2]
    versions = {"main": ROOT / "kernels"} | {
        a.partition("=")[0]: Path(a.partition("=")[2]) for a in args
    }
    for name, directory in versions.items():
        text = sass(*load(name, directory.resolve()))
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / f"{name}.sass").write_text(text)
        print(name, summary(text), flush=True)
