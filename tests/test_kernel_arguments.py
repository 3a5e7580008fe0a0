"""The kernels' entry points (``find_blocks``, ``block_sparse_attention``,
``flex_prefill_forward``, ``warm_up``) refuse tensors and settings that do not fit the
batch's plan, each with one message naming the argument: the kernels index their
tensors unchecked, so a tensor too short would be read or written out of bounds."""

import pytest
import torch
from helpers import plan_for, varlen_batch

from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.kernels import KVSource, flex_prefill_forward, warm_up
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.synthetic import paged_copy

Q_LENS, KV_LENS = [200, 70], [200, 330]  # a fresh prompt and a chunk after 260 cached
HQ, HKV, D, B = 4, 2, 16, 64
CONFIG = FlexPrefillConfig(block_size=B, min_budget=B, dense_threshold=0)


def batch(**overrides):
    """flex_prefill_forward's arguments for the two requests (contiguous K/V), with
    overrides."""
    q, k, v = varlen_batch(Q_LENS, KV_LENS, HQ, HKV, D)
    arguments = dict(
        q=q,
        kv=KVSource(k, v),
        plan=plan_for(Q_LENS, KV_LENS, B),
        config=CONFIG,
        scale=D**-0.5,
        dense=torch.zeros(2, dtype=torch.bool),
        out=torch.empty_like(q),
    )
    return arguments | overrides


def refused(*fragments, call=flex_prefill_forward, **overrides):
    arguments = batch(**overrides)
    if call is find_blocks:
        del arguments["out"]
    with pytest.raises(ValueError) as info:
        call(**arguments)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"


@pytest.mark.parametrize("rows", [150, 269])
def test_q_and_out_need_the_plan_s_rows(rows):
    q = batch()["q"]
    refused("q: shape", "rows >= 270", q=q[:rows], out=torch.empty_like(q[:rows]))
    refused("out: shape", "rows >= 270", out=torch.empty_like(q[:rows]))


def test_out_needs_q_s_heads_and_head_size():
    q = batch()["q"]
    refused("out: shape (270, 2, 16)", "[rows, 4, 16]", out=q[:, :2].clone())
    refused("out: shape (270, 4, 8)", "[rows, 4, 16]", out=q[..., :8].clone())


def test_contiguous_keys_need_every_request_s_rows():
    kv = batch()["kv"]
    short = KVSource(kv.key[:500], kv.value[:500])
    refused("kv.key: shape (500, 2, 16)", "rows >= 530", kv=short)
    refused("kv.key: shape", call=find_blocks, kv=short)


def test_heads_that_do_not_divide_are_refused():
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 3, 2, D)
    refused("kv.key: shape (530, 2, 16)", "Hkv dividing q's 3 heads", q=q,
            kv=KVSource(k, v), out=torch.empty_like(q))  # fmt: skip


def test_keys_and_values_must_match():
    kv = batch()["kv"]
    refused("kv.value: shape (530, 1, 16)", kv=KVSource(kv.key, kv.value[:, :1]))


def test_a_block_table_missing_a_page_or_a_row_is_refused():
    kv = batch()["kv"]
    paged = paged_copy(kv.key, kv.value, KV_LENS, 16)
    table = paged.block_table  # 330 keys: 21 pages of 16
    missing_page = KVSource(paged.key, paged.value, table[:, :20])
    refused("kv.block_table: shape (2, 20)", "pages >= 21", kv=missing_page)
    missing_row = KVSource(paged.key, paged.value, table[:1, :21])
    refused("kv.block_table: shape (1, 21)", "rows >= 2", kv=missing_row)


@pytest.mark.parametrize("name", ["q", "k", "v", "out"])
def test_a_head_size_that_is_not_unit_stride_is_refused(name):
    arguments = batch()
    strided = {
        "q": arguments["q"],
        "k": arguments["kv"].key,
        "v": arguments["kv"].value,
        "out": arguments["out"],
    }
    t = strided[name]
    strided[name] = t.transpose(1, 2).contiguous().transpose(1, 2)
    shown = {"k": "kv.key", "v": "kv.value"}.get(name, name)
    refused(
        f"{shown}: strides {strided[name].stride()}",
        "unit stride along the last",
        q=strided["q"],
        kv=KVSource(strided["k"], strided["v"]),
        out=strided["out"],
    )


@pytest.mark.parametrize(
    "dense, shown",
    [
        (torch.zeros(2, dtype=torch.int64), "dense: torch.int64 of shape (2,)"),
        (torch.zeros(3, dtype=torch.bool), "dense: torch.bool of shape (3,)"),
        (torch.zeros(1, dtype=torch.bool), "dense: torch.bool of shape (1,)"),
    ],
)
def test_dense_is_one_bool_a_request(dense, shown):
    refused(shown, "allowed: torch.bool of shape (2,)", call=find_blocks, dense=dense)


def test_every_config_must_have_the_plan_s_block_size():
    wide = CONFIG.with_overrides({"block_size": 128})
    refused("config: block_size 128 in a plan of 64-token blocks", config=wide)
    refused("config: block_size 128", config=[CONFIG, wide])


@pytest.mark.parametrize(
    "config, shown",
    [
        ({"gamma": 0.9}, "config: got dict"),
        ("default", "config: got str"),
        ([CONFIG, {"gamma": 0.9}], "config: got a list of dict"),
    ],
)
def test_config_is_a_flexprefill_config_or_one_a_request(config, shown):
    refused(shown, "allowed: a FlexPrefillConfig, or a sequence of them", config=config)


@pytest.mark.parametrize(
    "dtype, block_size, shown",
    [
        (torch.float64, 64, "dtype: torch.float64; allowed: torch.float16"),
        (torch.float32, 32, "block_size: 32; allowed: 64 or 128"),
    ],
)
def test_warm_up_refuses_what_the_kernels_do_not_run(dtype, block_size, shown):
    with pytest.raises(ValueError, match=shown):
        warm_up(dtype, 4, 2, 16, block_size, 16, torch.device("cpu"))
