"""FP8 operands, dequantised in registers.

vLLM's ``--kv-cache-dtype fp8`` stores keys and values as float8 e4m3 with one float32
scale per layer for each (real value = stored value x scale), and quantises the queries
the same way (``layer._q_scale``). The kernels read the fp8 tensors as they are and
fold the scales in: the query and key scales into the softmax scale, the value scale
into the output. A ``None`` scale pointer (a compile-time constant) marks an
unquantised operand and costs nothing.

Queries times keys run in the operands' own type when both are fp8 (the tensor cores'
fp8 path: e4m3 products are exact and accumulate in float32), else in the query's
type. Probabilities times values run in the output's 16-bit type by default: fp8
values are widened in registers. The attention's ``fp8_probabilities`` launch option
runs them in fp8 instead (FA3's fp8 path): the probabilities, at most 1, are scaled by
``E4M3_MAX`` before the cast, so that only those below 2^-9 / 448 flush to zero, and
the scale is divided out with the row sums.
"""

import torch
import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)  # the largest float8 e4m3 value


@triton.jit
def scale_of(scale_ptr):
    """The dequantisation scale at ``scale_ptr`` (one float32), 1 for ``None``."""
    if scale_ptr is None:
        return 1.0
    else:
        return tl.load(scale_ptr)


@triton.jit
def query_key_products(q, k, DOT_PRECISION: tl.constexpr):
    """``q [M, D] @ k [N, D]^T`` in float32, before the scales."""
    if q.dtype != k.dtype:
        k = k.to(q.dtype)
    return tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)


@triton.jit
def widened(x, dtype: tl.constexpr):
    """``x`` in ``dtype`` if it is fp8 (exact: e4m3 fits in 16-bit floats), else
    unchanged."""
    if x.dtype.is_fp8():
        return x.to(dtype)
    else:
        return x


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
