"""Run 39 (CPU): how many ``bar.sync`` Triton 3.6 compiles into a four-warp Gluon
partition's loop of mbarrier operations, for sm_90 (no GPU needed). SEQ is the loop
body: ``W<i>`` waits on barrier i, ``A<i>`` arrives on barrier 4 + i (one thread),
``C<i>`` arrives on it from every thread (``cp.async.mbarrier.arrive.noinc``, as
CUTLASS's one-CTA pipelines release a stage), ``X`` adds to a counter; a one-warp
partition arrives on barrier 0 beside it. Prints the body's ``bar.sync`` (the kernel's
count minus that of a body of ``X`` alone).
Usage: python membar_lab.py "W0 X A0" ..."""

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
)

OPS = {
    "W": "        mbarrier.wait(bars.index({i}), j & 1)",
    "A": "        mbarrier.arrive(bars.index(4 + {i}))",
    "C": "        async_copy.mbarrier_arrive(bars.index(4 + {i}), "
    "increment_count=False)",
    "X": "        acc += j",
}


def consumer(seq: str):
    """A ``@gluon.jit`` loop whose body is ``seq`` (Gluon reads its source from a
    file)."""
    body = "\n".join(OPS[op[0]].format(i=op[1:] or 0) for op in seq.split())
    source = f"""from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import mbarrier


@gluon.jit
def consumer(bars, out_ptr, n):
    acc = 0
    for j in range(n):
{body}
    gl.store(out_ptr, acc)
"""
    path = Path(tempfile.mkdtemp()) / "membar_consumer.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("membar_consumer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.consumer


@gluon.jit
def _producer(bars, n):
    for _ in range(n):
        mbarrier.arrive(bars.index(0))


def bar_syncs(seq: str) -> int:
    body = consumer(seq)

    @gluon.jit
    def kernel(out_ptr, n, num_warps: gl.constexpr):
        bars = gl.allocate_shared_memory(gl.int64, [8, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(8):
            mbarrier.init(bars.index(i), count=1)
        fence_async_shared()
        gl.thread_barrier()
        gl.warp_specialize(
            [(body, (bars, out_ptr, n)), (_producer, (bars, n))], [1], [24]
        )

    signature = {"out_ptr": "*i32", "n": "i32", "num_warps": "constexpr"}
    source = GluonASTSource(kernel, signature, constexprs={(2,): 4})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    return len(re.findall(r"bar[.]sync", compiled.asm["ptx"]))


base = bar_syncs("X")
for seq in sys.argv[1:]:
    print(f"{seq!r}: {bar_syncs(seq) - base} bar.sync in the loop")
