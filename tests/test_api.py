"""The functional API refuses bad arguments before any work, each with one message
naming the argument, what it got and what is allowed; it warns before the PyTorch
reference takes a lot of memory."""

import math
import warnings

import pytest
import torch
from helpers import dense_attention, rel_error, varlen_batch

from vllm_flexprefill import (
    ConfigError,
    FlexPrefillConfig,
    Pattern,
    flex_prefill_attention,
    inputs,
)

Q_LEN = KV_LEN = 8


def arguments(**overrides):
    """Valid arguments for one 8-token request (Hq 4, Hkv 2, D 16), with overrides."""
    q, k, v = varlen_batch([Q_LEN], [KV_LEN], 4, 2, 16)
    arguments = dict(
        q=q,
        k=k,
        v=v,
        cu_seqlens_q=torch.tensor([0, Q_LEN]),
        cu_seqlens_k=torch.tensor([0, KV_LEN]),
    )
    return arguments | overrides


def refused(error, *fragments, **overrides):
    """Call with ``overrides``; assert it raises ``error`` whose message holds every
    fragment."""
    with pytest.raises(error) as info:
        flex_prefill_attention(**arguments(**overrides))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def qkv_as(dtype):
    """q, k, v overrides of ``dtype``."""
    q, k, v = varlen_batch([Q_LEN], [KV_LEN], 4, 2, 16)
    return dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype))


# 1. dtypes


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_dtypes_are_refused(dtype):
    refused(
        TypeError,
        f"q, k, v have dtype {dtype}",
        "implementation='auto' (the PyTorch reference)",
        "allowed: torch.float16, torch.bfloat16, torch.float32, torch.float64",
        **qkv_as(dtype),
    )


def test_float64_is_refused_by_the_triton_kernels():
    refused(
        TypeError,
        "dtype torch.float64",
        "implementation='triton' (the Triton kernels)",
        "allowed: torch.float16, torch.bfloat16, torch.float32",
        "torch.float64 runs on implementation='reference'",
        implementation="triton",
        **qkv_as(torch.float64),
    )


def test_float64_message_on_cuda_names_auto():
    with pytest.raises(TypeError, match="implementation='auto' on CUDA tensors"):
        inputs.check_dtype(torch.float64, "triton", "auto")


def test_float64_runs_on_the_reference():
    out = flex_prefill_attention(**arguments(**qkv_as(torch.float64)))
    assert out.dtype == torch.float64


def test_mixed_dtypes_and_devices_are_refused():
    q, k, v = varlen_batch([Q_LEN], [KV_LEN], 4, 2, 16)
    refused(
        TypeError,
        "share one dtype",
        "q torch.float32, k torch.float16, v torch.float32",
        k=k.half(),
    )
    refused(ValueError, "one device", "q on cpu, k on cpu, v on meta", v=v.to("meta"))
    refused(TypeError, "q must be a torch.Tensor, got list", q=q.tolist())


# 2. softmax_scale


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf])
def test_a_softmax_scale_must_be_finite_and_positive(scale):
    refused(
        ValueError,
        "softmax_scale must be None (for 1/sqrt(D)) or a finite number > 0",
        f"got {scale!r}",
        softmax_scale=scale,
    )


@pytest.mark.parametrize(
    "scale, shown", [("0.1", "'0.1' (str)"), (True, "True (bool)")]
)
def test_a_softmax_scale_must_be_a_number(scale, shown):
    refused(TypeError, "softmax_scale", f"got {shown}", softmax_scale=scale)


# 3. cu_seqlens_q, cu_seqlens_k


@pytest.mark.parametrize(
    "offsets, error, shown",
    [
        (torch.tensor([0.0, 8.0]), TypeError, "got a torch.float32 tensor"),
        (torch.tensor([False, True]), TypeError, "got a torch.bool tensor"),
        ([0, 8], TypeError, "got list"),
        (torch.tensor([[0, 8]]), ValueError, "got shape (1, 2)"),
    ],
)
def test_offsets_must_be_a_1d_integer_tensor(offsets, error, shown):
    refused(
        error,
        "cu_seqlens_k must be a 1-D int32 or int64 torch.Tensor of offsets",
        shown,
        cu_seqlens_k=offsets,
    )


def test_offsets_need_a_request_start_at_0_and_never_decrease():
    refused(
        ValueError,
        "cu_seqlens_q must have num_requests + 1 >= 2 entries",
        "at least one request",
        "got [0]",
        cu_seqlens_q=torch.tensor([0]),
    )
    refused(
        ValueError,
        "cu_seqlens_q must start at 0, got 2",
        cu_seqlens_q=torch.tensor([2, 8], dtype=torch.int32),
    )
    refused(
        ValueError,
        "cu_seqlens_k must be non-decreasing, got entry 2 = 3 after entry 1 = 5",
        cu_seqlens_k=torch.tensor([0, 5, 3, 8]),
    )
    refused(
        ValueError,
        "cu_seqlens_q and cu_seqlens_k must both have num_requests + 1 entries",
        "got 3 and 2",
        cu_seqlens_q=torch.tensor([0, 4, 8]),
    )
    refused(
        ValueError,
        "cu_seqlens end at 8, 7 but q, k hold 8, 8 tokens",
        cu_seqlens_k=torch.tensor([0, 7]),
    )


def test_bad_inputs_are_refused_with_a_clear_message():
    q, k, v = varlen_batch([10], [8], 4, 2, 16)
    with pytest.raises(ValueError, match="q_len <= kv_len"):
        flex_prefill_attention(q, k, v, torch.tensor([0, 10]), torch.tensor([0, 8]))
    q, k, v = varlen_batch([8], [8], 3, 2, 16)
    with pytest.raises(ValueError, match="multiple of Hkv"):
        flex_prefill_attention(q, k, v, torch.tensor([0, 8]), torch.tensor([0, 8]))


# 4. shapes


@pytest.mark.parametrize(
    "hq, hkv, d, shapes",
    [
        (4, 0, 16, "q (8, 4, 16), k (8, 0, 16), v (8, 0, 16)"),
        (4, 2, 0, "q (8, 4, 0), k (8, 2, 0), v (8, 2, 0)"),
        (0, 2, 16, "q (8, 0, 16), k (8, 2, 16), v (8, 2, 16)"),
    ],
)
def test_empty_heads_and_head_dims_are_refused(hq, hkv, d, shapes):
    q, k, v = varlen_batch([Q_LEN], [KV_LEN], hq, hkv, d)
    refused(
        ValueError,
        "Hq >= 1 query heads, Hkv >= 1 KV heads and a head dim D >= 1",
        f"got {shapes}",
        q=q,
        k=k,
        v=v,
    )


def test_wrong_ranks_are_refused():
    q, _, _ = varlen_batch([Q_LEN], [KV_LEN], 4, 2, 16)
    refused(
        ValueError,
        "expected q [T, Hq, D] and k, v [T, Hkv, D], got (8, 64)",
        q=q.flatten(1),
    )


# 5. implementation


def test_the_triton_kernels_need_cuda_tensors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as outside the tests
    refused(
        ValueError,
        "implementation='triton' runs the Triton kernels, which need CUDA tensors",
        "got q, k, v on cpu",
        implementation="triton",
    )


def test_bfloat16_is_refused_under_triton_s_interpreter():
    refused(
        TypeError,
        "q, k, v have dtype torch.bfloat16",
        "(TRITON_INTERPRET=1) multiplies wrongly",
        **qkv_as(torch.bfloat16),
        implementation="triton",
    )


@pytest.mark.parametrize("strided", ["q", "k", "v"])
def test_views_not_unit_stride_along_the_head_size_run_on_the_kernels(strided):
    """A view whose head size is not its innermost dimension (a ``[T, D, H]`` tensor
    transposed) gives its contiguous copy's output: the kernels read rows of D
    contiguous elements."""
    q, k, v = varlen_batch([130], [257], 4, 2, 16, seed=2)
    cu_q, cu_k = torch.tensor([0, 130]), torch.tensor([0, 257])
    settings = {
        "block_size": 64, "min_budget": 64, "dense_threshold": 0, "max_density": 1.0
    }  # fmt: skip
    want, (stats,) = flex_prefill_attention(
        q, k, v, cu_q, cu_k, settings, implementation="triton", return_stats=True
    )
    assert "dense" not in stats.pattern  # the search ran, not the dense fallback
    tensors = {"q": q, "k": k, "v": v}
    tensors[strided] = tensors[strided].transpose(1, 2).contiguous().transpose(1, 2)
    assert tensors[strided].stride(-1) != 1
    got = flex_prefill_attention(
        *tensors.values(), cu_q, cu_k, settings, implementation="triton"
    )
    assert torch.equal(got, want)


@pytest.mark.parametrize("d", [8, 264])
def test_head_dims_the_kernels_do_not_tile_are_refused_there(d):
    q, k, v = varlen_batch([Q_LEN], [KV_LEN], 4, 2, d)
    refused(
        ValueError,
        "implementation='triton' (the Triton kernels) runs head dims D in [16, 256]",
        f"got D {d}",
        q=q,
        k=k,
        v=v,
        implementation="triton",
    )
    flex_prefill_attention(**arguments(q=q, k=k, v=v, implementation="reference"))


def test_an_unknown_implementation_is_refused_first():
    refused(
        ValueError,
        "implementation must be 'auto', 'reference' or 'triton', got 'fast'",
        q=None,
        softmax_scale=-1,
        implementation="fast",
    )


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_return_stats_takes_a_bool_only(flag):
    """A truthy string used to return the tuple, a falsy one the output alone."""
    expected = "return_stats must be True or False; got"
    refused(ValueError, expected, repr(flag), return_stats=flag)


# 6. config


def test_config_takes_a_preset_name_or_a_mapping():
    q, k, v = varlen_batch([128], [128], 4, 2, 16)
    cu = torch.tensor([0, 128])
    # max_density 1: this tiny request selects most of its blocks, and must stay sparse
    settings = dict(
        block_size=64, min_budget=64, dense_threshold=0, gamma=0.8, max_density=1.0
    )
    runs = {
        name: flex_prefill_attention(q, k, v, cu, cu, config, return_stats=True)
        for name, config in [
            ("model", FlexPrefillConfig(**settings)),
            ("mapping", settings),
            ("preset", "default"),
        ]
    }
    assert torch.equal(runs["mapping"][0], runs["model"][0])
    assert runs["mapping"][1][0].pattern == runs["model"][1][0].pattern
    assert Pattern.DENSE.label not in runs["mapping"][1][0].pattern
    assert (
        runs["preset"][1][0].pattern == [Pattern.DENSE.label] * 4
    )  # below its dense_threshold


# A fresh prompt that selects about 0.43 of its causal blocks (gamma 0.5), and a chunk
# after unaligned cached context that selects about 0.80.
DENSITY_LENS = [(768, 768), (130, 257)]


@pytest.mark.parametrize("implementation", ["reference", "triton"])
def test_a_request_denser_than_max_density_is_reported_dense(implementation):
    # the reference on the CPU: the exact mask comparison below needs runs that repeat
    # bit for bit
    cuda = implementation == "triton" and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    q_lens, kv_lens = zip(*DENSITY_LENS, strict=True)
    q, k, v = varlen_batch(q_lens, kv_lens, 4, 2, 16, device=device, seed=1)
    cu_q, cu_k = torch.tensor([0, 768, 898]), torch.tensor([0, 768, 1025])
    settings = {"block_size": 64, "min_budget": 64, "dense_threshold": 0, "gamma": 0.5}
    runs = {
        max_density: flex_prefill_attention(
            q,
            k,
            v,
            cu_q,
            cu_k,
            settings | {"max_density": max_density},
            return_stats=True,
            implementation=implementation,
        )
        for max_density in (0.6, 1.0)
    }
    out, (fresh, chunk) = runs[0.6]
    assert chunk.pattern == [Pattern.DENSE.label] * 4 and chunk.density.eq(1).all()
    rows, keys = slice(768, 898), slice(768, 1025)
    want = dense_attention(q[rows].cpu(), k[keys].cpu(), v[keys].cpu(), 16**-0.5)
    assert rel_error(out[rows], want) < 1e-5
    # the fresh prompt keeps its selection; with max_density 1 the chunk keeps its own
    _, (free_fresh, free_chunk) = runs[1.0]
    assert fresh.pattern == free_fresh.pattern
    assert torch.equal(fresh.block_mask, free_fresh.block_mask)
    assert Pattern.DENSE.label not in fresh.pattern and fresh.density.mean() < 0.6
    assert Pattern.DENSE.label not in free_chunk.pattern
    assert 0.6 < free_chunk.density.mean() < 1


def test_an_invalid_config_mapping_names_the_field():
    refused(ConfigError, "'gama'", config={"gama": 0.9})


# 7. memory of the reference


def test_a_large_reference_call_warns_once(monkeypatch):
    monkeypatch.setattr(inputs, "REFERENCE_MEMORY_WARNING_BYTES", 100_000)
    q, k, v = varlen_batch([8, 100], [8, 120], 4, 2, 16)
    with pytest.warns(UserWarning) as caught:
        flex_prefill_attention(
            q, k, v, torch.tensor([0, 8, 108]), torch.tensor([0, 8, 128])
        )
    (warning,) = caught
    message = str(warning.message)
    for fragment in ("request 1 (q_len=100, kv_len=120", "GiB", "Triton kernels"):
        assert fragment in message, message
    assert warning.filename == __file__  # points at the caller


def test_a_small_reference_call_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flex_prefill_attention(**arguments())


def test_the_memory_estimate_bounds_a_32k_request():
    peak = inputs._reference_peak_bytes(32768, 32768, 32, 128, torch.float32)
    assert 15.6e9 < peak < 24 * 2**30


# 8. layer


@pytest.mark.parametrize(
    "layer, error, shown",
    [
        (-1, ValueError, "got -1"),
        (True, TypeError, "got True (bool)"),
        (1.0, TypeError, "got 1.0 (float)"),
    ],
)
def test_a_layer_must_be_none_or_a_non_negative_int(layer, error, shown):
    refused(
        error, "layer must be None or a layer index (an int >= 0)", shown, layer=layer
    )


def test_a_config_with_per_layer_settings_needs_the_layer():
    """Without ``layer`` the overrides would not apply, silently: refused."""
    config = {"layers": [{"first": 0, "last": 1000, "gamma": 0.5}]}
    refused(
        ValueError,
        "layer must be a layer index (an int >= 0) when the config has per-layer",
        "got None",
        config=config,
    )
    flex_prefill_attention(**arguments(config=config, layer=0))
