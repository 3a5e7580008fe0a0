"""The start-up warm-up compiles every kernel variant a request will need.

Triton compiles one binary per *specialisation* of a kernel's arguments: besides the
constexprs, each integer argument is keyed on whether it equals 1 or is divisible by 16,
and each pointer on whether it is 16-byte aligned. A request whose sizes give a key the
warm-up did not produce compiles again, mid-request, for seconds. On the CPU, the
interpreter runs the kernels while each launch's key is computed exactly as Triton 3.6's
launcher computes it for an NVIDIA GPU; every key of a request must be one the
warm-up made.
"""

import pytest
import torch
from helpers import plan_for, varlen_batch
from triton.backends.nvidia.compiler import CUDABackend
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction, create_function_from_signature

from vllm_flexprefill.config import FlexPrefillConfig
from vllm_flexprefill.kernels import flex_prefill_forward, warm_up
from vllm_flexprefill.synthetic import paged_copy

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="records launches through the interpreter"
)

D, B = 32, 64


@pytest.fixture
def launches(monkeypatch):
    """Records ``(kernel, specialisation key, launch options)`` of every
    kernel launch."""
    seen, binders = set(), {}
    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        if self.fn not in binders:
            jit = JITFunction(self.fn, **self.kwargs)
            binders[self.fn] = create_function_from_signature(
                jit.signature, jit.params, CUDABackend
            )
        _, key, options = binders[self.fn](*args, **kwargs)
        seen.add(
            (self.fn.__name__, tuple(map(tuple, key)), tuple(sorted(options.items())))
        )
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording_run)
    return seen


# Fresh prompts and chunks after cached context, one to three requests, with sizes that
# make every size-dependent integer odd, even, a multiple of 16 or 1 somewhere. Short
# chunks keep the interpreter's work small: the last two batches launch exactly the
# variants that (2048, 1024) / (2048, 3072) and (100, 33) / (5000, 33) did, in a fifth
# of the time (checked 2026-12-03).
BATCHES = [
    ((1000,), (1000,)),
    ((64,), (1999,)),
    ((777, 300, 65), (777, 1301, 4160)),
    ((128, 64), (2048, 1024)),
    ((100, 33), (1500, 33)),
]


def differences(launch, compiled) -> str:
    """How ``launch`` differs from the closest compiled variant of the same kernel."""
    name, key, options = launch
    variants = [k for n, k, o in compiled if n == name and o == options]
    if not variants:
        return f"{name}: no compiled variant with options {options}"
    closest = min(
        variants, key=lambda k: sum(a != b for a, b in zip(k, key, strict=True))
    )
    return f"{name}: " + ", ".join(
        f"argument {i} {want} -> {got}"
        for i, (want, got) in enumerate(zip(closest, key, strict=True))
        if want != got
    )


@pytest.mark.parametrize(
    "page_size, hq, hkv, fp8", [(16, 4, 2, False), (128, 3, 1, False), (16, 4, 2, True)]
)
def test_requests_reuse_the_kernels_the_warm_up_compiled(
    launches, page_size, hq, hkv, fp8
):
    """``fp8``: an fp8 cache and fp8 queries with their scales (each its own
    allocation, as vLLM's per-layer scales are)."""
    warm_up(torch.float16, hq, hkv, D, B, page_size, "cpu", fp8=fp8)
    compiled = set(launches)
    paper = FlexPrefillConfig(block_size=B, min_budget=2 * B, dense_threshold=0)
    rerank = {"selection": "rerank", "rerank_budget": "head"}
    selections = (
        paper,
        paper.with_overrides({"selection": "vsgrid"}),
        paper.with_overrides(rerank),
    )
    stored = torch.float8_e4m3fn if fp8 else torch.float16
    for seed, (q_lens, kv_lens) in enumerate(BATCHES):
        launches.clear()
        q, k, v = varlen_batch(q_lens, kv_lens, hq, hkv, D, dtype=stored, seed=seed)
        scales = [torch.tensor(0.5) if fp8 else None for _ in range(3)]
        plan = plan_for(q_lens, kv_lens, B)
        dense = torch.zeros(len(q_lens), dtype=torch.bool)
        flex_prefill_forward(
            q,
            paged_copy(k, v, kv_lens, page_size, 0, *scales[1:]),
            plan,
            # each batch mixes selections, or runs one alone
            [selections[(seed + i) % 3] for i in range(len(q_lens))],
            D**-0.5,
            dense,
            torch.empty_like(q, dtype=torch.float16),
            q_scale=scales[0],
        )
        missing = sorted(launches - compiled)
        assert not missing, f"{q_lens} / {kv_lens} compiles again: " + "; ".join(
            differences(launch, compiled) for launch in missing
        )
