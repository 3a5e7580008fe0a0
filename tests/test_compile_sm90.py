"""Every kernel compiles for Hopper (sm_90) - checked on the CPU, no GPU needed.

The interpreter runs kernels as NumPy and cannot catch what only the GPU compiler
rejects (layouts, shared memory, unsupported ops). Triton can compile ahead of time for
a named target, so CI compiles each kernel with the launch constants the code uses and
checks the attention kernel's matrix products use Hopper's wgmma. The checks run in a
subprocess without ``TRITON_INTERPRET`` (under the interpreter kernels are
not compiled).
"""

import inspect
import os
import re
import subprocess
import sys

import pytest
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

HOPPER = GPUTarget("cuda", 90, 32)
SHARED_MEMORY_PER_BLOCK = 232448  # bytes an H100/H200 program may use (227 KB)
SHARED_MEMORY_PER_SM = 233472  # an SM's 228 KB, each program's share plus 1 KB reserved
CHECKS = [
    "attention-paged-bf16-128",
    "attention-fp16-128",
    "attention-paged-bf16-64",
    "attention-bf16-96",
    "attention-tma-paged-bf16-128",
    "attention-tma-paged-bf16-256",
    "attention-paged-bf16-256",
    "attention-tma-paged-fp8-128",
    "attention-paged-fp8-64",
    "attention-tma-paged-fp8-probabilities-128",
    "probe-paged",
    "probe-paged-fp8",
    "probe-contiguous",
    "probe-contiguous-256",
    "search",
    "search-256",
    "search-fp8",
    "segment-probe-paged",
    "segment-probe-paged-fp8",
    "segment-probe-contiguous-256",
    "hopper-attention-contiguous-128",
    "hopper-attention-paged16-128",
    "hopper-attention-paged128-64",
    "hopper-attention-default-paged16-128",
    "hopper-attention-ping-pong-128",
    "hopper-attention-block64-contiguous-128",
    "hopper-attention-block64-paged16-128",
    "hopper-attention-block64-paged128-128",
    "hopper-probe-contiguous-128",
    "hopper-probe-paged16-128",
    "hopper-probe-paged128-64",
    "hopper-probe-scores-contiguous-128",
    "hopper-probe-scores-paged16-128",
    "hopper-probe-scores-paged128-64",
]


@pytest.mark.parametrize("check", CHECKS)
def test_kernels_compile_for_hopper(check):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, __file__, check],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


I32 = "*i32"


def compile_for_hopper(
    kernel,
    pointers: dict,
    constants: dict,
    num_warps: int,
    num_stages: int = 3,
    source=ASTSource,
    **options,
):
    """Compile ``kernel`` with ``pointers`` {name: '*dtype'},
    ``constants`` {name: value}; other parameters are i32, except scales and weights
    (fp32).
    Pointers and strides are declared 16-divisible, as Triton specializes them at
    launch for real tensors."""
    signature = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constants:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            real = name in ("scale", "scale_log2", "min_weight", "floor")
            signature[name] = "fp32" if real else "i32"
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(kernel.arg_names)
        if name in pointers or name.startswith("stride")
    }
    compiled = triton.compile(
        source(
            kernel,
            signature,
            constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()},
            attrs=aligned,
        ),
        target=HOPPER,
        options=dict(num_warps=num_warps, num_stages=num_stages, **options),
    )
    # A launch needing more shared memory than an SM has fails only on the GPU.
    assert compiled.metadata.shared <= SHARED_MEMORY_PER_BLOCK, (
        kernel.fn.__name__,
        constants,
        compiled.metadata.shared,
    )
    return compiled


PLAN_POINTERS = {
    name: I32
    for name in (
        "req_q_start",
        "req_q_len",
        "req_kv_len",
        "req_k_start",
        "req_table_row",
        "block_request",
        "block_row",
        "q_block_offset",
        "req_kv_offset",
        "table_ptr",
        "index_ptr",
        "count_ptr",
    )
}


def scale_pointers(names, fp8: bool) -> tuple[dict, dict]:
    """``(pointers, constants)``: the dequantisation scales as float32 pointers (fp8)
    or as the ``None`` constants of unquantised operands."""
    return (
        ({name: "*fp32" for name in names}, {}) if fp8 else ({}, dict.fromkeys(names))
    )


def attention_compiles_with_wgmma(
    paged, head_dim, block, dtype, tma=False, fp8_probabilities=False
):
    """``dtype`` "fp8e4nv": fp8 queries, keys and values, bf16 output; the query-key
    products (and with ``fp8_probabilities`` the probability-value ones) must then
    use fp8 wgmma."""
    from vllm_flexprefill.kernels import sparse_attention

    fp8 = dtype == "fp8e4nv"
    launch = sparse_attention.AttentionLaunch.default(head_dim)
    block_n = min(launch.block_n, block)
    scales, scale_constants = scale_pointers(
        ("q_scale_ptr", "k_scale_ptr", "v_scale_ptr"), fp8
    )
    pointers = dict(
        PLAN_POINTERS,
        q_ptr=f"*{dtype}",
        out_ptr="*bf16" if fp8 else f"*{dtype}",
        lse_ptr="*fp32",
        k_ptr=f"*{dtype}",
        v_ptr=f"*{dtype}",
        **scales,
    )
    constants = dict(
        PAGED=paged,
        PAGE_SIZE=128 if tma else 16 if paged else 1,
        TMA=tma,
        HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=block,
        BLOCK_N=block_n,
        WRITE_LSE=True,
        HEADS_FASTEST=True,
        HEAVY_FIRST=True,
        DOT_PRECISION="tf32",
        FP8_PROBABILITIES=fp8_probabilities,
        **scale_constants,
    )
    if tma:
        pointers.update(
            k_desc=f"tensordesc<{dtype}[1, {block_n}, {head_dim}]>",
            v_desc=f"tensordesc<{dtype}[1, {block_n}, {head_dim}]>",
        )
    else:
        constants.update(k_desc=None, v_desc=None)
    compiled = compile_for_hopper(
        sparse_attention._block_sparse_attention_kernel,
        pointers,
        constants,
        launch.num_warps,
        launch.num_stages,
    )
    ptx = compiled.asm["ptx"]
    products = [line for line in ptx.splitlines() if "wgmma.mma_async" in line]
    in_fp8 = [line for line in products if "f32.e4m3.e4m3" in line]
    assert products
    # fp8: the query-key products; with fp8 probabilities every product
    if fp8_probabilities:
        assert in_fp8 == products
    else:
        assert bool(in_fp8) == fp8 and len(in_fp8) < len(products)
    if tma:
        assert "cp.async.bulk.tensor" in ptx


def probe_arguments(paged, head_dim, dtype) -> tuple[dict, dict]:
    """``(pointers, constants)`` both probes' kernels share: queries and keys of
    ``dtype`` (with their scales if fp8), the log-sum-exp pass's float32 partials."""
    scales, scale_constants = scale_pointers(
        ("q_scale_ptr", "k_scale_ptr"), dtype == "fp8e4nv"
    )
    pointers = dict(
        PLAN_POINTERS,
        **scales,
        q_ptr=f"*{dtype}",
        k_ptr=f"*{dtype}",
        max_ptr="*fp32",
        sum_ptr="*fp32",
        lse_ptr="*fp32",
    )
    constants = dict(
        PAGED=paged,
        PAGE_SIZE=16 if paged else 1,
        HEAD_DIM=head_dim,
        BLOCK_D=head_dim,
        BLOCK=128,
        DOT_PRECISION="tf32",
        **scale_constants,
    )
    return pointers, constants


def probe_kernels_compile(paged, head_dim=128, dtype="bf16"):
    from vllm_flexprefill.kernels import probe

    pointers, constants = probe_arguments(paged, head_dim, dtype)
    pointers |= dict(
        mean_ptr="*fp32",
        vtok_ptr="*fp32",
        stok_ptr="*fp32",
        vblk_ptr="*fp32",
        sblk_ptr="*fp32",
    )
    compile_for_hopper(
        probe._probe_row_stats_kernel,
        pointers,
        dict(constants, SPLIT=probe.SPLIT_TOKENS),
        8,
        probe.lse_stages(head_dim),
    )
    compile_for_hopper(
        probe._probe_lse_kernel,
        pointers,
        {
            name: constants[name]
            for name in ("HEAD_DIM", "BLOCK_D", "BLOCK", "q_scale_ptr")
            if name in constants
        }
        | dict(SPLIT=probe.SPLIT_TOKENS),
        4,
    )
    default = probe.ProbeLaunch.default(head_dim, quantised=dtype.startswith("fp8"))
    launches = [default, probe.ProbeLaunch(), probe.ProbeLaunch(1, None, 8)]
    launches += [probe.ProbeLaunch(8, 16, 4, max_registers=128)]
    for launch in dict.fromkeys(launches):  # uncapped, the default is ProbeLaunch()
        compiled = compile_for_hopper(
            probe._probe_scores_kernel,
            pointers,
            dict(
                constants,
                BLOCKS_PER_PROGRAM=launch.blocks_per_program,
                SLAB=launch.slab or 128,
            ),
            **launch.compile_options(),
        )
        if launch == default and default.max_registers:  # the cap spills little
            stack = re.search(r"STACK:(\d+)", resource_usage(compiled.asm["cubin"]))
            assert int(stack.group(1)) <= 128, stack.group(0)


def segment_probe_kernels_compile(paged, head_dim=128, dtype="bf16"):
    from vllm_flexprefill.kernels import segment_probe

    pointers, constants = probe_arguments(paged, head_dim, dtype)
    probe_pointers = (
        "probe_request", "probe_last", "probe_stride", "probe_count",
        "probe_first_tile",
    )  # fmt: skip
    pointers |= dict.fromkeys(probe_pointers, I32) | dict(
        out_ptr="*fp32", tile_lse_ptr="*fp32"
    )
    rows = segment_probe.SEGMENT_PROBE_ROWS
    heads, warps = segment_probe.tile_lse_launch(4, head_dim)  # Llama-3.1-8B's
    compile_for_hopper(
        segment_probe._segment_tile_lse_kernel,
        pointers,
        dict(
            constants,
            ROWS=rows,
            HEADS=heads,
            TILES_PER_PROGRAM=segment_probe.TILES_PER_PROGRAM,
        ),
        warps,
    )
    compile_for_hopper(
        segment_probe._segment_masses_kernel,
        pointers,
        dict(BLOCK=128, ROWS=rows, TILE=segment_probe.MASS_TILES),
        4,
    )


def search_kernels_compile(head_dim=128, dtype="bf16"):
    from vllm_flexprefill.kernels import (
        block_index,
        pattern,
        pooling,
        query_aware,
        radix_select,
        rerank,
        top_mass,
        vertical_slash,
        vsgrid,
    )

    f32, i8, i64 = "*fp32", "*i8", "*i64"
    fp8 = dtype == "fp8e4nv"
    k_scale, k_constant = scale_pointers(["k_scale_ptr"], fp8)
    q_scale, q_constant = scale_pointers(["q_scale_ptr"], fp8)
    # (kernel, its pointers besides the plan's, its constants), each with 4 warps
    bound_search = dict(DIGIT_BITS=radix_select.DIGIT_BITS)
    kernels = [
        (
            pooling._key_means_kernel,
            dict(k_ptr=f"*{dtype}", out_ptr=f32, **k_scale),
            dict(PAGED=True, PAGE_SIZE=16, HEAD_DIM=head_dim, BLOCK_D=head_dim)
            | dict(BLOCK=128, **k_constant),
        ),
        (
            pooling._query_means_kernel,
            dict(q_ptr=f"*{dtype}", out_ptr=f32, from_grid_ptr=i8, **q_scale),
            dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, BLOCK=128, **q_constant),
        ),
        (
            query_aware._query_aware_grid_kernel,
            dict(qmean_ptr=f32, kmean_ptr=f32, from_grid_ptr=i8, grid_ptr=f32),
            dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, ROW_TILE=query_aware.ROW_TILE)
            | dict.fromkeys(("ROWS", "CHUNK"), query_aware.tile_blocks(head_dim)),
        ),
        (
            block_index._block_index_kernel,
            dict(columns_ptr=i8, offsets_ptr=i8, from_grid_ptr=i8)
            | dict(threshold_ptr=f32, grid_ptr=f32),
            dict(CHUNK=128),
        ),
        (block_index._every_block_kernel, dict(dense_ptr=i8), dict(CHUNK=128)),
        (
            pattern._pattern_kernel,
            dict(mean_ptr=f32, kmean_ptr=f32, masses_ptr=f32, key_blocks_ptr=i64)
            | dict(tau_ptr=f32, dense_ptr=i8, vsgrid_ptr=i8, query_aware_ptr=i8)
            | dict(logits_ptr=f32, partial_ptr=f32, ticket_ptr=I32)
            | dict(from_grid_ptr=i8, rows_ptr=i8),
            dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, SPLIT=pattern.SPLIT)
            | dict(ROW_TILE=pattern.ROW_TILE, GATHER=pattern.GATHER),
        ),
        (
            vertical_slash._top_blocks_kernel,
            dict(blocks_ptr=f32, forced_ptr=f32, count_ptr=I32, low_ptr=i64)
            | dict(high_ptr=i64, query_aware_ptr=i8, vsgrid_ptr=i8, out_ptr=i8)
            | dict(vsgrid_budget_ptr=i64),
            dict(TILE=vertical_slash.TILE, STEP=vertical_slash.STEP),
        ),
        (
            vsgrid._pooled_weight_kernel,
            dict(grid_ptr=f32, masses_ptr=f32, probe_last_ptr=I32)
            | dict(probe_block_ptr=I32, last_probe_ptr=i64, weight_ptr=f32)
            | dict(vsgrid_ptr=i8),
            dict(TILE=vsgrid.WEIGHT_TILE, WEIGHTS=vsgrid.POOLED_WEIGHTS),
        ),
        (
            vsgrid._vsgrid_estimate_kernel,
            dict(grid_ptr=f32, masses_ptr=f32, vsgrid_ptr=i8, block_row_ptr=I32)
            | dict(row_probe_ptr=i64, row_shift_ptr=i64, block_request_ptr=I32)
            | dict(weight_ptr=f32),
            dict(TILE=vsgrid.ROW_TILE),
        ),
        *(
            (
                vsgrid._row_threshold_kernel,
                dict(grid_ptr=f32, active_ptr=i8, length_ptr=I32, gamma_ptr=f32)
                | dict(low_ptr=I32, high_ptr=I32, threshold_ptr=f32)
                | dict(widen_ptr=I32, candidate_ptr=f32),
                dict(TILE=vsgrid.ROW_TILE, STEPS=vsgrid.BISECTION_STEPS)
                | dict(CANDIDATES=candidates),
            )
            for candidates in (False, True)
        ),
        (
            rerank._sampled_mass_kernel,
            dict(q_ptr=f"*{dtype}", k_ptr=f"*{dtype}", masses_ptr=f32, rerank_ptr=i8)
            | dict(**q_scale, **k_scale),
            dict(PAGED=True, PAGE_SIZE=16, BLOCK=128, QUERIES=rerank.RERANK_QUERIES)
            | dict(SLOT_TILE=rerank.ROW_TILE)
            | dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, DOT_PRECISION="tf32")
            | dict(**q_constant, **k_constant),
        ),
        (
            rerank._row_bound_kernel,
            dict(masses_ptr=f32, keep_ptr=I32, bound_ptr=f32, rows_ptr=i8),
            dict(bound_search, TILE=rerank.BOUND_TILE),
        ),
        (
            rerank._row_share_kernel,
            dict(masses_ptr=f32, head_ptr=i8),
            dict(TILE=rerank.ROW_TILE),
        ),
        (
            rerank._head_digits_kernel,
            dict(masses_ptr=f32, keep_ptr=I32, head_ptr=i8, record_ptr=I32),
            dict(bound_search, ROWS=rerank.HEAD_ROWS, TILE=rerank.HEAD_TILE)
            | dict(RECORD=rerank.HEAD_RECORD),
        ),
        (
            rerank._head_bound_kernel,
            dict(bound_ptr=f32, head_ptr=i8, record_ptr=I32),
            dict(bound_search, ROWS=rerank.HEAD_ROWS, RECORD=rerank.HEAD_RECORD),
        ),
        (
            rerank._keep_kernel,
            dict(masses_ptr=f32, bound_ptr=f32, rerank_ptr=i8),
            dict(TILE=rerank.ROW_TILE),
        ),
    ]
    for kernel, pointers, constants in kernels:
        compile_for_hopper(kernel, PLAN_POINTERS | pointers, constants, 4)
    int32 = ("row_len", "kept", "count", "prev_count", "ticket", "prefix")
    int32 += ("above_count", "out_count")
    float32 = ("scores", "compact", "mass", "target", "above_mass", "out_threshold")
    radix_pointers = dict(row_start_ptr="*i64", active_ptr=i8)
    radix_pointers |= {f"{name}_ptr": I32 for name in int32}
    radix_pointers |= {f"{name}_ptr": f32 for name in float32}
    launch = top_mass.TopMassLaunch()
    constants = dict(CHUNK=launch.chunk, TILE=launch.tile, KEEP=launch.keep)
    constants |= dict(RADIX_BITS=top_mass.RADIX_BITS, GATHER=top_mass.GATHER)
    # the first pass, the one planning the compact lists, the one writing them, one
    # reading them, the last
    passes = [{"FIRST"}, {"PLAN_COMPACT"}, {"COMPACT"}, {"FROM_COMPACT"}]
    passes += [{"FROM_COMPACT", "LAST"}]
    for on in passes:
        flags = ("FIRST", "LAST", "PLAN_COMPACT", "COMPACT", "FROM_COMPACT")
        compile_for_hopper(
            top_mass._radix_pass_kernel,
            radix_pointers,
            constants | {flag: flag in on for flag in flags},
            launch.num_warps,
        )


def bulk_copy_tile(page_size, head_dim, block=128):
    """What the Gluon kernels' K/V descriptors are for ``page_size`` (None: contiguous)
    and ``block``-token tiles: ``(paged, tokens a copy brings, the bf16 descriptor's
    type)``."""
    from triton.experimental.gluon import language as gl

    paged = page_size is not None
    rows = min(page_size, block) if paged else block
    layout = gl.NVMMASharedLayout.get_default_for([1, rows, head_dim], gl.bfloat16)
    return paged, rows, f"tensordesc<bf16[1, {rows}, {head_dim}],{layout!r}>"


def hopper_attention_compiles(
    page_size, head_dim, num_warps=8, stages=2, ping_pong=False, block=128
):
    """The warp-specialised Gluon kernel: ``page_size`` None for contiguous K/V,
    ``num_warps`` 4 for two consumer partitions (at ``block`` 64, one), ``stages`` K/V
    stages (three fill the shared memory at 128-token blocks, half of it at 64). Its
    consumers get 240 registers (setmaxnreg; 232 at 64-token blocks, whose programs
    launch with 128 so that two fit an SM), and with one consumer partition and
    whole-tile copies it spills nothing; tiles arrive by bulk copies, one per page a
    tile spans; both products run on wgmma."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from vllm_flexprefill.kernels import hopper_attention, hopper_common

    paged, rows, tile = bulk_copy_tile(page_size, head_dim, block)
    pointers = dict(
        PLAN_POINTERS,
        q_ptr="*bf16",
        out_ptr="*bf16",
        lse_ptr="*fp32",
        k_desc=tile,
        v_desc=tile,
    )
    constants = dict(
        PAGED=paged,
        PAGE_SIZE=page_size or 1,
        HEAD_DIM=head_dim,
        BLOCK=block,
        STAGES=stages,
        WRITE_LSE=True,
        PING_PONG=ping_pong,
        num_warps=num_warps,
    )
    pair = block == 64
    compiled = compile_for_hopper(
        hopper_attention._hopper_sparse_attention_kernel,
        pointers,
        constants,
        num_warps,
        source=GluonASTSource,
        maxnreg=(
            hopper_attention.PAIR_MAX_REGISTERS if pair else hopper_common.MAX_REGISTERS
        ),
    )
    assert_wgmma_and_bulk_copies(compiled, 2 * block // rows)  # K and V
    consumer_registers = 232 if pair else 240
    assert (
        f"setmaxnreg.inc.sync.aligned.u32 \t{consumer_registers}"
        in (compiled.asm["ptx"])
    )
    if pair:  # two programs an SM
        assert 2 * (compiled.metadata.shared + 1024) <= SHARED_MEMORY_PER_SM
    if (num_warps == 8 or pair) and rows == block:  # 16-token pages: a few bytes spill
        assert "STACK:0 " in resource_usage(compiled.asm["cubin"])  # no spills


def hopper_probe_compiles(page_size, head_dim):
    """The probe's warp-specialised log-sum-exp statistics: ``page_size`` None for
    contiguous K/V. Its key tiles arrive by bulk copies, one per page a tile spans; the
    products run on wgmma; the shared memory fits."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from vllm_flexprefill.kernels import hopper_common, hopper_probe

    paged, rows, tile = bulk_copy_tile(page_size, head_dim)
    pointers = dict(
        PLAN_POINTERS,
        q_ptr="*bf16",
        max_ptr="*fp32",
        sum_ptr="*fp32",
        k_desc=tile,
    )
    constants = dict(
        PAGED=paged,
        PAGE_SIZE=page_size or 1,
        HEAD_DIM=head_dim,
        SPLIT_BLOCKS=64,
        STAGES=hopper_probe.STAGES,
        num_warps=4,
    )
    compiled = compile_for_hopper(
        hopper_probe._hopper_probe_row_stats_kernel,
        pointers,
        constants,
        4,
        source=GluonASTSource,
        maxnreg=hopper_common.MAX_REGISTERS,
    )
    assert_wgmma_and_bulk_copies(compiled, 128 // rows)


def hopper_probe_scores_compiles(page_size, head_dim):
    """The probe's warp-specialised scores pass: ``page_size`` None for contiguous K/V.
    Its key tiles arrive by bulk copies, one per page a tile spans; the products run on
    wgmma; the shared memory fits."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from vllm_flexprefill.kernels import hopper_common, hopper_probe_scores

    paged, rows, tile = bulk_copy_tile(page_size, head_dim)
    pointers = dict(
        PLAN_POINTERS,
        q_ptr="*bf16",
        lse_ptr="*fp32",
        vtok_ptr="*fp32",
        stok_ptr="*fp32",
        vblk_ptr="*fp32",
        sblk_ptr="*fp32",
        k_desc=tile,
    )
    constants = dict(
        PAGED=paged,
        PAGE_SIZE=page_size or 1,
        HEAD_DIM=head_dim,
        BLOCKS_PER_PROGRAM=hopper_probe_scores.BLOCKS_PER_PROGRAM,
        STAGES=hopper_probe_scores.STAGES,
        num_warps=4,
    )
    compiled = compile_for_hopper(
        hopper_probe_scores._hopper_probe_scores_kernel,
        pointers,
        constants,
        4,
        source=GluonASTSource,
        maxnreg=hopper_common.MAX_REGISTERS,
    )
    assert_wgmma_and_bulk_copies(compiled, 128 // rows)


def assert_wgmma_and_bulk_copies(compiled, at_least: int) -> None:
    """The kernel's products run on wgmma and its tiles arrive by at least
    ``at_least`` bulk tensor copies."""
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx
    copies = [line for line in ptx.splitlines() if "cp.async.bulk.tensor.3d" in line]
    assert len(copies) >= at_least, len(copies)


def resource_usage(cubin: bytes) -> str:
    """``cuobjdump -res-usage`` of a compiled kernel (Triton ships the tool)."""
    import pathlib
    import tempfile

    from triton.backends.nvidia import compiler

    tool = pathlib.Path(compiler.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run(
            [tool, "-res-usage", f.name], capture_output=True, text=True, check=True
        )
    return done.stdout


if __name__ == "__main__":
    {
        "attention-paged-bf16-128": lambda: attention_compiles_with_wgmma(
            True, 128, 128, "bf16"
        ),
        "attention-fp16-128": lambda: attention_compiles_with_wgmma(
            False, 128, 128, "fp16"
        ),
        "attention-paged-bf16-64": lambda: attention_compiles_with_wgmma(
            True, 64, 64, "bf16"
        ),
        "attention-bf16-96": lambda: attention_compiles_with_wgmma(
            False, 96, 128, "bf16"
        ),
        "attention-tma-paged-bf16-128": lambda: attention_compiles_with_wgmma(
            True, 128, 128, "bf16", tma=True
        ),
        "attention-tma-paged-bf16-256": lambda: attention_compiles_with_wgmma(
            True, 256, 128, "bf16", tma=True
        ),
        "attention-paged-bf16-256": lambda: attention_compiles_with_wgmma(
            True, 256, 128, "bf16"
        ),
        "attention-tma-paged-fp8-128": lambda: attention_compiles_with_wgmma(
            True, 128, 128, "fp8e4nv", tma=True
        ),
        "attention-paged-fp8-64": lambda: attention_compiles_with_wgmma(
            True, 64, 64, "fp8e4nv"
        ),
        "attention-tma-paged-fp8-probabilities-128": lambda: (
            attention_compiles_with_wgmma(
                True, 128, 128, "fp8e4nv", tma=True, fp8_probabilities=True
            )
        ),
        "probe-paged": lambda: probe_kernels_compile(True),
        "probe-paged-fp8": lambda: probe_kernels_compile(True, dtype="fp8e4nv"),
        "probe-contiguous": lambda: probe_kernels_compile(False),
        "probe-contiguous-256": lambda: probe_kernels_compile(False, 256),
        "search": search_kernels_compile,
        "search-256": lambda: search_kernels_compile(256),
        "search-fp8": lambda: search_kernels_compile(dtype="fp8e4nv"),
        "segment-probe-paged": lambda: segment_probe_kernels_compile(True),
        "segment-probe-paged-fp8": lambda: segment_probe_kernels_compile(
            True, dtype="fp8e4nv"
        ),
        "segment-probe-contiguous-256": lambda: segment_probe_kernels_compile(
            False, 256
        ),
        "hopper-attention-contiguous-128": lambda: hopper_attention_compiles(None, 128),
        "hopper-attention-paged16-128": lambda: hopper_attention_compiles(16, 128),
        "hopper-attention-paged128-64": lambda: hopper_attention_compiles(128, 64),
        "hopper-attention-default-paged16-128": lambda: hopper_attention_compiles(
            16, 128, num_warps=4, stages=3
        ),
        "hopper-attention-ping-pong-128": lambda: hopper_attention_compiles(
            128, 128, num_warps=4, stages=3, ping_pong=True
        ),
        "hopper-attention-block64-contiguous-128": lambda: hopper_attention_compiles(
            None, 128, num_warps=4, stages=3, block=64
        ),
        "hopper-attention-block64-paged16-128": lambda: hopper_attention_compiles(
            16, 128, num_warps=4, stages=3, block=64
        ),
        "hopper-attention-block64-paged128-128": lambda: hopper_attention_compiles(
            128, 128, num_warps=4, stages=3, block=64
        ),
        "hopper-probe-contiguous-128": lambda: hopper_probe_compiles(None, 128),
        "hopper-probe-paged16-128": lambda: hopper_probe_compiles(16, 128),
        "hopper-probe-paged128-64": lambda: hopper_probe_compiles(128, 64),
        "hopper-probe-scores-contiguous-128": lambda: hopper_probe_scores_compiles(
            None, 128
        ),
        "hopper-probe-scores-paged16-128": lambda: hopper_probe_scores_compiles(
            16, 128
        ),
        "hopper-probe-scores-paged128-64": lambda: hopper_probe_scores_compiles(
            128, 64
        ),
    }[sys.argv[1]]()
