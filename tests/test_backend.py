"""The vLLM backend on a CPU: registration and every spelling of the backend name,
configuration resolution, the metadata builder's split of mixed batches in both orders
vLLM produces, and the impl's orchestration end to end through the backend classes.

vLLM runs on its CPU platform here (conftest). FlashAttention's compiled kernel cannot
run on a CPU, so the end-to-end test stands in a PyTorch paged attention with the same
contract for ``flash_attn_varlen_func``; everything else - vLLM's config, layers,
FlashAttention metadata builder, our builder, impl and Triton kernels - is the
real code.
"""

import json
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU-platform tests (GPU: test_backend_gpu.py)"
)

import bench_e2e  # noqa: E402
from common import LLAMA_8B_MODEL  # noqa: E402
from helpers import (  # noqa: E402
    TINY_LLAMA,
    dense_attention,
    rel_error,
    tiny_llama_config,
)
from vllm import SamplingParams  # noqa: E402
from vllm.config import AttentionConfig, set_current_vllm_config  # noqa: E402
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.model_executor.layers.attention import (  # noqa: E402
    Attention,
    chunked_local_attention,
)
from vllm.utils import torch_utils  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402
from vllm.v1.attention.backend import CommonAttentionMetadata  # noqa: E402
from vllm.v1.attention.backends.registry import AttentionBackendEnum  # noqa: E402
from vllm.v1.attention.backends.utils import get_kv_cache_layout  # noqa: E402
from vllm.v1.kv_cache_interface import (  # noqa: E402
    ChunkedLocalAttentionSpec,
    FullAttentionSpec,
)
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402

import vllm_flexprefill  # noqa: E402,F401  (registers the backend)
from vllm_flexprefill import ConfigError, FlexPrefillConfig  # noqa: E402
from vllm_flexprefill import backend as backend_module  # noqa: E402
from vllm_flexprefill import stats as flex_stats  # noqa: E402
from vllm_flexprefill.backend import FlexPrefillBackend, FlexPrefillMetadataBuilder  # noqa: E402
from vllm_flexprefill.blocks import ChunkGeometry  # noqa: E402
from vllm_flexprefill.break_even import break_even_density  # noqa: E402
from vllm_flexprefill.guard import Mode, length_bucket  # noqa: E402
from vllm_flexprefill.kernels import hopper_common  # noqa: E402
from vllm_flexprefill.plugin import (  # noqa: E402
    BACKEND_PATH,
    CONFIG_ENV,
    register,
    resolve_config,
)
from vllm_flexprefill.reference import flex_prefill_reference  # noqa: E402
from vllm_flexprefill.request_settings import HOOK, RequestSettings  # noqa: E402
from vllm_flexprefill.workspace import StepScratch  # noqa: E402

PAGE = 16  # tiny_llama_config's pages


# ---------------------------------------------------------------- registration


def test_flexprefill_is_an_alias_of_the_custom_slot_and_other_backends_are_untouched():
    register()
    register()  # idempotent
    assert AttentionBackendEnum["FLEXPREFILL"] is AttentionBackendEnum.CUSTOM
    assert AttentionBackendEnum.CUSTOM.get_path() == BACKEND_PATH
    assert AttentionBackendEnum.CUSTOM.get_class() is FlexPrefillBackend
    assert "FLEXPREFILL" not in [member.name for member in AttentionBackendEnum]
    assert (
        AttentionBackendEnum["FLASH_ATTN"]
        .get_path()
        .endswith("flash_attn.FlashAttentionBackend")
    )


def test_flexprefill_prefers_128_token_kv_pages_unless_the_user_sets_them():
    from vllm.platforms import current_platform

    args = dict(
        model=TINY_LLAMA,
        skip_tokenizer_init=True,
        load_format="dummy",
        dtype="float16",
        attention_backend="FLEXPREFILL",
    )
    config = EngineArgs(**args, block_size=32).create_engine_config()
    with set_current_vllm_config(config):
        # CUDA's default page is 16 tokens
        assert FlexPrefillBackend.get_preferred_block_size(16) == 128
    # what vLLM's executors call after loading
    current_platform.update_block_size_for_backend(config)
    assert config.cache_config.block_size == 32


MODEL_CONFIGS = sorted(
    (Path(__file__).parents[1] / "scripts" / "models").glob("*/config.json")
)


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.parent.name)
def test_every_model_config_we_ship_resolves_with_flexprefill(config):
    """The dummy-weight configs of the preset's model families (and Qwen3, Mistral,
    Gemma 3 with its sliding-window layers): vLLM resolves each with FLEXPREFILL, and
    its head size is one the kernels tile."""
    engine = EngineArgs(
        model=str(config.parent),
        skip_tokenizer_init=True,
        load_format="dummy",
        attention_backend="FLEXPREFILL",
    ).create_engine_config()
    assert engine.attention_config.backend is AttentionBackendEnum.CUSTOM
    model = engine.model_config
    assert model.max_model_len >= 32768
    assert FlexPrefillBackend.supports_head_size(model.get_head_size())


def test_bench_e2e_raises_the_context_to_256k_for_vllm():
    """``bench_e2e.py``'s engines past 128K: with its overrides vLLM accepts
    ``max_model_len`` 262144 for the Llama-3.1-8B config, and refuses it without."""
    max_model_len, context = bench_e2e.engine_context([262144 - 64])

    def engine(**overrides):
        return EngineArgs(
            model=LLAMA_8B_MODEL,
            skip_tokenizer_init=True,
            load_format="dummy",
            attention_backend="FLEXPREFILL",
            max_model_len=max_model_len,
            **overrides,
        ).create_engine_config()

    assert engine(**context).model_config.max_model_len == 262144
    with pytest.raises(ValueError, match="max_model_len"):
        engine()


def test_tensor_parallel_engines_resolve_with_flexprefill_per_rank_heads():
    """``-tp 2``: vLLM resolves the backend and gives each rank half the heads, which
    is all the backend and its workspace see (the kernels' per-rank slice:
    test_kernels.py)."""
    engine = EngineArgs(
        model=LLAMA_8B_MODEL,
        skip_tokenizer_init=True,
        load_format="dummy",
        attention_backend="FLEXPREFILL",
        tensor_parallel_size=2,
        distributed_executor_backend="mp",
    ).create_engine_config()
    assert engine.attention_config.backend is AttentionBackendEnum.CUSTOM
    model, parallel = engine.model_config, engine.parallel_config
    assert (
        model.get_num_attention_heads(parallel),
        model.get_num_kv_heads(parallel),
    ) == (16, 4)


def test_head_sizes_the_kernels_tile_are_accepted_and_others_refused():
    accepted = [d for d in range(8, 320, 8) if FlexPrefillBackend.supports_head_size(d)]
    assert accepted == list(range(32, 257, 16))


def test_a_dual_chunk_attention_model_is_refused_at_start_up():
    """Qwen2.5-*-1M's layers pass these two (``qwen2.py``): their queries carry five
    rotary variants side by side, which no vLLM 0.24 backend reads."""
    config = tiny_llama_config(attention_backend="FLEXPREFILL")
    dual_chunk = {
        "chunk_size": 262144,
        "local_size": 8192,
        "original_max_position_embeddings": 32768,
    }
    refused = pytest.raises(ValueError, match="dual_chunk_attention_config")
    with set_current_vllm_config(config), refused:
        Attention(
            4, 64, 0.125, 2, cache_config=config.cache_config,
            attn_backend=FlexPrefillBackend, prefix="model.layers.0.self_attn.attn",
            layer_idx=0, dual_chunk_attention_config=dual_chunk,
        )  # fmt: skip


def test_requests_settings_with_micro_batching_are_refused_at_start_up():
    """Micro-batches' metadata is built from slices of the batch: the rows would
    read other requests' settings."""
    config = tiny_llama_config(attention_backend="FLEXPREFILL")
    config.model_config.logits_processors = [HOOK]
    config.parallel_config.enable_dbo = True
    refused = pytest.raises(ValueError, match=r"micro-batching \(--enable-dbo")
    with set_current_vllm_config(config), refused:
        Attention(
            4, 64, 0.125, 2, cache_config=config.cache_config,
            attn_backend=FlexPrefillBackend, prefix="model.layers.0.self_attn.attn",
        )  # fmt: skip
    config.model_config.logits_processors = None  # either one alone starts
    with set_current_vllm_config(config):
        Attention(
            4, 64, 0.125, 2, cache_config=config.cache_config,
            attn_backend=FlexPrefillBackend, prefix="model.layers.0.self_attn.attn",
        )  # fmt: skip


@pytest.mark.parametrize(
    "spelling",
    [
        ["--attention-backend", "FLEXPREFILL"],
        ["--attention-backend", "flexprefill"],
        ["-ac.backend=FlexPrefill"],
        ["--attention-config", json.dumps({"backend": "FLEXPREFILL"})],
    ],
)
def test_every_cli_spelling_selects_the_backend(spelling):
    from vllm.entrypoints.openai.cli_args import make_arg_parser

    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(
        [
            "--model",
            TINY_LLAMA,
            "--skip-tokenizer-init",
            "--load-format",
            "dummy",
            *spelling,
        ]
    )
    config = EngineArgs.from_cli_args(args).create_engine_config()
    assert config.attention_config.backend is AttentionBackendEnum.CUSTOM


def test_llm_keyword_spellings_select_the_backend():
    assert (
        tiny_llama_config(attention_backend="FLEXPREFILL").attention_config.backend
        is AttentionBackendEnum.CUSTOM
    )
    # LLM(attention_config={"backend": ...}) builds this before vLLM loads plugins:
    # importing vllm_flexprefill is what makes it work.
    attention = AttentionConfig(backend="flexprefill")
    assert (
        tiny_llama_config(attention_config=attention).attention_config.backend
        is AttentionBackendEnum.CUSTOM
    )


FRESH_PROCESS = """
import pickle, sys
from vllm.v1.attention.backends.registry import AttentionBackendEnum
config = pickle.loads(sys.stdin.buffer.read())  # a spawned worker unpickles first
assert config.backend is AttentionBackendEnum.CUSTOM, config.backend
from vllm.plugins import load_general_plugins
load_general_plugins()                          # then vLLM loads the plugins
assert AttentionBackendEnum["FLEXPREFILL"] is AttentionBackendEnum.CUSTOM
assert AttentionBackendEnum.CUSTOM.get_class().__name__ == "FlexPrefillBackend"
print("ok")
"""


def test_a_spawned_process_decodes_the_config_and_registers_through_the_entry_point():
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        input=pickle.dumps(AttentionConfig(backend="FLEXPREFILL")),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith(b"ok"), (
        done.stderr.decode()[-2000:]
    )


# ---------------------------------------------------------------- configuration


def test_config_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    assert resolve_config(None) == resolve_config({})  # the default preset
    assert resolve_config(None).gamma == 0.9
    path = tmp_path / "mine.yaml"
    path.write_text("gamma: 0.8\ndense_threshold: 4096\n")
    monkeypatch.setenv("VLLM_FLEXPREFILL_CONFIG", str(path))
    assert resolve_config(None).gamma == 0.8
    overridden = resolve_config(
        {"flexprefill": {"config": "llama-3.1-8b-instruct", "tau": 0.2}}
    )
    assert (overridden.gamma, overridden.tau) == (0.95, 0.2)
    # keys over the env file
    assert resolve_config({"flexprefill": {"gamma": 0.85}}).dense_threshold == 4096


def test_config_errors_name_their_source(monkeypatch):
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    with pytest.raises(
        ConfigError, match="(?s)additional-config.*unknown field 'gama'"
    ):
        resolve_config({"flexprefill": {"gama": 0.9}})
    monkeypatch.setenv("VLLM_FLEXPREFILL_CONFIG", "no-such-file.yaml")
    with pytest.raises(ConfigError, match="no-such-file.yaml.*not found"):
        resolve_config(None)


# ---------------------------------------------------------------- metadata builder

# max_density 1: the density guard off, so every long prefill runs sparse (the guard:
# test_the_guard_runs_dense_layers_through_flashattention)
SETTINGS = {
    "flexprefill": {
        "block_size": 64,
        "min_budget": 64,
        "dense_threshold": 256,
        "max_density": 1.0,
    }
}
# (query length, sequence length) per request: two decodes, a chunk after unaligned
# context (sparse), a short fresh prompt (dense), a long fresh prompt (sparse), and a
# 40-token chunk after long context (dense: under one block of queries).
DECODE_FIRST = [(1, 300), (1, 50), (200, 700), (100, 100), (300, 300), (40, 900)]
SORTED_BY_LENGTH = sorted(DECODE_FIRST)  # Model Runner V2's order
SPARSE = {(200, 700), (300, 300)}


class Model:
    """Real vLLM attention layers of the tiny model, built with our backend
    (``layer_options``: more of ``Attention``'s arguments; ``kv_cache_blocks``: the
    KV cache's pages, as vLLM sets them before it builds the metadata builder)."""

    def __init__(
        self,
        kv_cache_dtype="auto",
        layer_options=None,
        kv_cache_blocks=None,
        head_size=64,
        **settings,
    ):
        self.config = tiny_llama_config(
            attention_backend="FLEXPREFILL",
            additional_config=settings or SETTINGS,
            kv_cache_dtype=kv_cache_dtype,
        )
        self.config.cache_config.num_gpu_blocks = kv_cache_blocks
        with set_current_vllm_config(self.config):
            self.layers = [
                Attention(
                    4,
                    head_size,
                    0.125,
                    2,
                    cache_config=self.config.cache_config,
                    attn_backend=FlexPrefillBackend,
                    prefix=f"model.layers.{i}.self_attn.attn",
                    **(layer_options or {}),
                )
                for i in range(2)
            ]
            spec = FullAttentionSpec(
                block_size=PAGE,
                num_kv_heads=2,
                head_size=head_size,
                dtype=torch.uint8 if kv_cache_dtype == "fp8" else torch.float16,
            )
            self.builder = FlexPrefillMetadataBuilder(
                spec,
                [layer.layer_name for layer in self.layers],
                self.config,
                torch.device("cpu"),
            )


def batch_metadata(rows, pages_per_request=64):
    """CommonAttentionMetadata as the runners build it; request i owns
    pages i*64+1.. ."""
    q_lens = torch.tensor([q for q, _ in rows], dtype=torch.int32)
    seq_lens = torch.tensor([s for _, s in rows], dtype=torch.int32)
    starts = torch.zeros(len(rows) + 1, dtype=torch.int32)
    starts[1:] = q_lens.cumsum(0)
    table = (
        torch.arange(len(rows) * pages_per_request, dtype=torch.int32).view(
            len(rows), -1
        )
        + 1
    )
    positions = torch.cat([torch.arange(s - q, s) for q, s in rows])
    request = torch.repeat_interleave(torch.arange(len(rows)), q_lens.long())
    slots = table[request, positions // PAGE].long() * PAGE + positions % PAGE
    return CommonAttentionMetadata(
        query_start_loc=starts,
        query_start_loc_cpu=starts,
        seq_lens=seq_lens,
        num_reqs=len(rows),
        num_actual_tokens=int(starts[-1]),
        max_query_len=int(q_lens.max()),
        max_seq_len=int(seq_lens.max()),
        block_table_tensor=table,
        slot_mapping=slots,
        seq_lens_cpu_upper_bound=seq_lens.clone(),
    )


@pytest.mark.parametrize(
    "rows", [DECODE_FIRST, SORTED_BY_LENGTH], ids=["decode-first", "sorted-by-length"]
)
def test_builder_routes_long_prefills_to_flexprefill_and_the_rest_to_flashattention(
    rows,
):
    model = Model()
    metadata = model.builder.build(0, batch_metadata(rows))
    (route,) = metadata.routes.values()
    sparse = [i for i, row in enumerate(rows) if row in SPARSE]
    dense = [i for i, row in enumerate(rows) if row not in SPARSE]
    starts = [0] + torch.tensor([q for q, _ in rows]).cumsum(0).tolist()
    assert route.plan.table_row.tolist() == sparse
    assert route.plan.q_start.tolist() == [starts[i] for i in sparse]
    assert list(route.plan.q_lens) == [rows[i][0] for i in sparse]
    assert list(route.plan.kv_lens) == [rows[i][1] for i in sparse]
    assert route.dense.seq_lens.tolist() == [rows[i][1] for i in dense]
    dense_lens = route.dense.query_start_loc.diff().tolist()
    assert dense_lens == [rows[i][0] for i in dense]
    # leading rows: a prefix of the batch, no gather
    if dense == list(range(len(dense))):
        assert (
            route.gather is None and route.dense.num_actual_tokens == starts[len(dense)]
        )
    else:
        assert route.gather.tolist() == [
            t for i in dense for t in range(starts[i], starts[i + 1])
        ]
    assert torch.equal(route.dense.block_table, metadata.block_table[dense])


def test_batches_without_long_prefills_are_plain_flashattention():
    model = Model()
    decodes = [(1, 300), (1, 50), (1, 1000)]
    metadata = model.builder.build(0, batch_metadata(decodes))
    (route,) = metadata.routes.values()
    assert route.plan is None and route.gather is None
    assert route.dense.num_actual_tokens == 3 and route.dense.seq_lens.tolist() == [
        300,
        50,
        1000,
    ]
    # dense rows leading the batch go to FlashAttention as a prefix, without a gather
    metadata = model.builder.build(
        0, batch_metadata([(1, 300), (100, 100), (300, 300)])
    )
    (route,) = metadata.routes.values()
    assert (
        route.gather is None
        and route.dense.num_actual_tokens == 101
        and route.plan.table_row.tolist() == [2]
    )


def test_an_override_past_the_models_last_layer_is_refused_at_start_up():
    """The tiny model has layers 0 and 1: an override from layer 1 on ("to the end")
    is taken, one from layer 2 would apply to none."""
    for first, refused in ((1, False), (2, True)):
        override = {"first": first, "last": 40, "gamma": 0.95}
        settings = {"flexprefill": dict(SETTINGS["flexprefill"], layers=[override])}
        if refused:
            with pytest.raises(ConfigError, match=r"layers\[0\]\.first: 2 is past"):
                Model(**settings)
        else:
            Model(**settings)


def test_the_step_scratch_is_bounded_by_the_kv_cache_and_the_context():
    """What vLLM's profiling pass reserves per FLEXPREFILL layer call (on a GPU:
    ``tests/test_backend_gpu.py``): the tiny model's shape, its fp16 KV cache (2
    layers x 2 KV heads x 64 x K and V), its step; the keys of a step's sparse requests
    at most what the cache holds and at most every request at the whole context."""
    config = tiny_llama_config(attention_backend="FLEXPREFILL")
    scratch = StepScratch.of(config, block_size=64)
    scheduler = config.scheduler_config
    assert scratch.kv_bytes_per_token == 2 * 2 * 2 * 64 * 2
    assert scratch.max_requests == min(
        scheduler.max_num_seqs, scheduler.max_num_batched_tokens // 64
    )
    assert (scratch.num_q_heads, scratch.num_kv_heads, scratch.head_dim) == (4, 2, 64)
    whole = scratch.max_requests * scratch.max_model_len
    sizes = [scratch.bytes(tokens) for tokens in (0, 1 << 16, whole, 2 * whole)]
    assert 0 < sizes[0] < sizes[1] < sizes[2] == sizes[3]


def test_a_step_past_the_scratch_key_budget_runs_its_later_requests_dense(caplog):
    """Requests that share prefix-cached pages hold more keys together than the KV
    cache: the scratch was reserved for the cache's capacity, so the requests that
    would pass it run dense, with one warning."""
    builder = Model(kv_cache_blocks=1100 // PAGE).builder  # 1088 tokens of cache
    assert builder.key_budget == 1088
    rows = [(200, 700), (300, 300), (1, 50), (256, 900), (64, 80)]
    with caplog.at_level("WARNING"):
        (route,) = builder.build(0, batch_metadata(rows)).routes.values()
        builder.build(0, batch_metadata(rows))
    assert route.plan.table_row.tolist() == [0, 1]  # 1000 keys; the 900 would pass
    assert route.dense.seq_lens.tolist() == [50, 900, 80]
    warnings = [r for r in caplog.records if "more than the 1088" in r.getMessage()]
    assert len(warnings) == 1 and "1 of them run dense" in warnings[0].getMessage()
    # before the KV cache exists: every request at the whole context
    model = Model()
    scratch = StepScratch.of(model.config, block_size=64)
    assert model.builder.key_budget == scratch.max_requests * scratch.max_model_len


@pytest.mark.parametrize(
    "feature, reason",
    [
        ({"per_layer_sliding_window": 64}, "sliding-window attention"),
        ({"logits_soft_cap": 30.0}, "logit soft-capping"),
        ({"alibi_slopes": [0.5, 0.25, 0.125, 0.0625]}, "ALiBi"),
    ],
)
def test_layers_the_sparse_kernels_do_not_implement_run_dense(feature, reason, caplog):
    """A model feature the sparse path lacks: its layers run dense (FlashAttention)
    with one warning, whatever the request lengths."""
    model = Model(layer_options=feature)
    with caplog.at_level("WARNING"):
        metadata = model.builder.build(0, batch_metadata(DECODE_FIRST))
    (route,) = metadata.routes.values()
    assert route.plan is None and not metadata.modes
    assert route.dense.seq_lens.tolist() == [s for _, s in DECODE_FIRST]
    assert all(layer.impl.sparse_config(layer) is None for layer in model.layers)
    said = [r for r in caplog.records if f"runs {reason} layers dense" in r.message]
    assert len(said) == 1


def test_one_builder_counts_a_step_s_prefill_tokens():
    """vLLM makes a metadata builder per KV-cache group (Gemma 3: six sliding-window
    groups beside the full one), each seeing every step: the builder of the first
    layer that can run sparse counts the step's prefill tokens, the others none.
    Speculative decoding's verification rows (up to 1 + its tokens) are no prefill."""
    model = Model()
    model.config.speculative_config = SimpleNamespace(num_speculative_tokens=3)
    spec = model.builder.kv_cache_spec
    first, second = (
        FlexPrefillMetadataBuilder(
            spec, [layer.layer_name], model.config, torch.device("cpu")
        )
        for layer in model.layers
    )
    rows = [*DECODE_FIRST, (4, 400)]  # a verification row
    for builder in (second, first):
        builder.build(0, batch_metadata(rows))
    assert first.metrics.counts.prefill_tokens == {"sparse": 500, "dense": 140}
    assert second.metrics.counts.prefill_tokens == {"sparse": 0, "dense": 0}
    # where no layer can run sparse, the first layer's builder counts them as dense
    dense = Model(layer_options={"per_layer_sliding_window": 64})
    dense.builder.build(0, batch_metadata(rows))
    assert dense.builder.metrics.counts.prefill_tokens == {"sparse": 0, "dense": 644}


def test_the_guard_s_limits_follow_the_kernel_that_computes_the_layers(monkeypatch):
    """``max_density: auto`` on a Hopper GPU: the Hopper kernel's break-even where it
    computes the layers (16-bit cache, head size 128, vLLM's token-major NHD layout);
    the portable kernel's for an fp8 cache, head size 64 or the head-major HND layout,
    which the portable kernel reads."""
    monkeypatch.setattr(hopper_common, "is_hopper", lambda device: True)
    bucket = length_bucket(20000)

    auto = {"flexprefill": {**SETTINGS["flexprefill"], "max_density": "auto"}}

    def limits(**options):
        model = Model(flexprefill=auto["flexprefill"], **options)
        model.builder.build(0, batch_metadata([(300, 300)]))  # routes the layers
        guard = model.builder.guard
        return {
            guard.state(layer.layer_name, bucket).max_density for layer in model.layers
        }

    hopper, portable = (
        break_even_density(1 << bucket, fast, block_size=64) for fast in (True, False)
    )  # the settings' 64-token blocks
    assert limits(head_size=128) == {hopper}
    assert limits(head_size=128, kv_cache_dtype="fp8") == {portable}
    assert limits(head_size=64) == {portable}
    monkeypatch.setenv("VLLM_KV_CACHE_LAYOUT", "HND")
    get_kv_cache_layout.cache_clear()
    try:
        assert limits(head_size=128) == {portable}
    finally:
        monkeypatch.delenv("VLLM_KV_CACHE_LAYOUT")
        get_kv_cache_layout.cache_clear()


def test_decode_steps_take_in_the_last_sparse_step_s_densities():
    """The guard reads the selections back without waiting for the GPU: a step
    queues the copy, a later one takes it in. Decode steps do both, so the last
    sparse step's densities reach the guard and the metrics before the next long
    prompt."""
    model = Model()
    metadata = model.builder.build(0, batch_metadata([(300, 300)]))
    plan = metadata.routes[next(iter(metadata.routes))].plan
    for name in metadata.modes:  # as each layer's search hands its selection over
        kv_count = torch.ones(4, plan.num_q_blocks, dtype=torch.int32)
        metadata.guard.record(name, metadata.length_bucket, kv_count, 4 * 15)
    for _ in range(2):
        model.builder.build(0, batch_metadata([(1, 301)]))
    for name in metadata.modes:
        state = model.builder.guard.state(name, metadata.length_bucket)
        assert state.density == pytest.approx(4 * 5 / (4 * 15))
    assert sum(model.builder.metrics.counts.density_buckets) == 2


def test_vllm_s_dummy_batches_teach_the_guard_nothing():
    """vLLM's warm-up and graph capture run dummy prefills whose block tables hold only
    the null page (0): their selections reach neither the guard nor the metrics, so
    the first real prompts are routed on their own densities."""
    model = Model()

    def sparse_step(rows):
        metadata = model.builder.build(0, rows)
        route = metadata.routes[next(iter(metadata.routes))]
        for name in metadata.modes:  # as each layer's search hands its selection over
            kv_count = torch.ones(4, route.plan.num_q_blocks, dtype=torch.int32)
            metadata.guard.record(
                name, metadata.length_bucket, kv_count, 4 * 15, live=route.live
            )
        for _ in range(2):  # decode steps take the readback in
            model.builder.build(0, batch_metadata([(1, 301)]))
        return metadata

    dummy = batch_metadata([(300, 300)])
    dummy.block_table_tensor.zero_()
    metadata = sparse_step(dummy)
    states = [
        model.builder.guard.state(n, metadata.length_bucket) for n in metadata.modes
    ]
    assert len(states) == 2 and all(state.density is None for state in states)
    assert sum(model.builder.metrics.counts.density_buckets) == 0
    sparse_step(batch_metadata([(300, 300)]))
    assert all(state.density == pytest.approx(1 / 3) for state in states)
    assert sum(model.builder.metrics.counts.density_buckets) == 2


def test_chunked_local_attention_layers_run_dense(monkeypatch, caplog):
    """Llama 4's chunked local attention: vLLM's builder wrapper hands FLEXPREFILL's
    builder one row per local chunk of each request. Those layers run dense
    (FlashAttention over the chunks), with one warning."""
    chunk = 256
    # vLLM's CPU platform would pick its own backend for the wrapper
    monkeypatch.setattr(
        chunked_local_attention, "get_attn_backend", lambda *_: FlexPrefillBackend
    )
    monkeypatch.setattr(torch_utils, "PIN_MEMORY", False)  # no pinned memory here
    config = tiny_llama_config(
        attention_backend="FLEXPREFILL", additional_config=SETTINGS
    )
    with set_current_vllm_config(config):
        layers = [
            chunked_local_attention.ChunkedLocalAttention(
                4,
                64,
                0.125,
                chunk,
                2,
                cache_config=config.cache_config,
                prefix=f"model.layers.{i}.self_attn.attn",
            )  # fmt: skip
            for i in range(2)
        ]
        spec = ChunkedLocalAttentionSpec(
            block_size=PAGE, num_kv_heads=2, head_size=64, dtype=torch.float16,
            attention_chunk_size=chunk,
        )  # fmt: skip
        builder = layers[0].attn_backend.get_builder_cls()(
            spec, [layer.layer_name for layer in layers], config, torch.device("cpu")
        )
    # a 600-token prompt (local chunks of 256, 256 and 88) beside a decode at 300
    with caplog.at_level("WARNING"):
        metadata = builder.build(0, batch_metadata([(600, 600), (1, 300)]))
    (route,) = metadata.routes.values()
    assert route.plan is None and not metadata.modes
    assert route.dense.seq_lens.tolist() == [256, 256, 88, 300 - chunk]
    said = [
        r for r in caplog.records if "runs chunked local attention layers" in r.message
    ]
    assert len(said) == 1


def test_steps_without_a_sparse_request_read_no_sequence_lengths(monkeypatch):
    """Decode steps, short chunks: FlashAttention's metadata, built without reading
    the sequence lengths back from the device (Model Runner V2's draft steps give no
    host copy) and without the per-request work."""
    model = Model()
    decodes = batch_metadata([(1, 300), (40, 900), (1, 50)])
    decodes.seq_lens_cpu_upper_bound = None

    def no_readback(*_):
        raise AssertionError("the sequence lengths were read back")

    decodes.seq_lens.cpu = no_readback
    monkeypatch.setattr(backend_module, "batch_settings", no_readback)
    metadata = model.builder.build(0, decodes)
    (route,) = metadata.routes.values()
    assert route.plan is None and route.gather is None and metadata.guard is None
    assert route.dense.num_actual_tokens == 42


def test_per_layer_overrides_get_their_own_routing():
    settings = {
        "flexprefill": dict(
            SETTINGS["flexprefill"],
            layers=[{"first": 1, "last": 1, "dense_threshold": 800}],
        )
    }
    model = Model(**settings)
    metadata = model.builder.build(0, batch_metadata(DECODE_FIRST))
    assert set(metadata.routes) == {(64, 256), (64, 800)}
    assert set(metadata.modes) == {model.layers[0].layer_name}  # rows to search
    # no sequence reaches 800 with >= 64 queries
    assert metadata.routes[(64, 800)].plan is None


# ---------------------------------------------------------------- end to end


def torch_paged_attention(
    q,
    k,
    v,
    max_seqlen_q,
    cu_seqlens_q,
    max_seqlen_k,
    seqused_k=None,
    softmax_scale=None,
    causal=True,
    block_table=None,
    out=None,
    q_descale=None,
    k_descale=None,
    v_descale=None,
    **unused,
):
    """Stand-in for vLLM's FlashAttention varlen call (paged, bottom-right causal;
    fp8 operands come with their descale factors)."""
    if k.dtype == torch.float8_e4m3fn:
        q = q.float() * q_descale.flatten()[0] if q_descale is not None else q
        k, v = k.float() * k_descale.flatten()[0], v.float() * v_descale.flatten()[0]
    for i in range(len(cu_seqlens_q) - 1):
        start, end, length = (
            int(cu_seqlens_q[i]),
            int(cu_seqlens_q[i + 1]),
            int(seqused_k[i]),
        )
        tokens = torch.arange(length)
        pages = block_table[i, tokens // PAGE].long()
        keys, values = k[pages, tokens % PAGE], v[pages, tokens % PAGE]
        out[start:end] = dense_attention(q[start:end], keys, values, softmax_scale).to(
            out.dtype
        )
    return out


@pytest.fixture
def torch_flash_attention(monkeypatch):
    """vLLM's FlashAttention call answered by :func:`torch_paged_attention` (its
    kernels need a GPU)."""
    from vllm.v1.attention.backends import flash_attn

    monkeypatch.setattr(
        flash_attn, "flash_attn_varlen_func", torch_paged_attention, raising=False
    )


@dataclass
class Batch:
    rows: list[tuple[int, int]]  # (query length, sequence length) per request
    cam: CommonAttentionMetadata
    sequences: list[tuple[torch.Tensor, ...]]  # q [s, 4, 64], k, v [s, 2, 64] float32
    kv_cache: torch.Tensor  # float16, NaN where no request wrote
    query: torch.Tensor  # [tokens, 4, 64] float16, each request's last q_len queries


def random_batch(rows, seed: int = 0) -> Batch:
    """Random sequences for ``rows``, their keys and values written into a paged
    cache as the KV-cache update op would have."""
    cam = batch_metadata(rows)
    gen = torch.Generator().manual_seed(seed)
    sequences = [
        tuple(torch.randn(s, heads, 64, generator=gen) for heads in (4, 2, 2))
        for _, s in rows
    ]
    kv_cache = torch.full(
        (len(rows) * 64 + 1, 2, PAGE, 2, 64), float("nan"), dtype=torch.float16
    )
    for i, (_, k, v) in enumerate(sequences):
        tokens = torch.arange(k.shape[0])
        pages = cam.block_table_tensor[i, tokens // PAGE].long()
        kv_cache[pages, 0, tokens % PAGE] = k.half()
        kv_cache[pages, 1, tokens % PAGE] = v.half()
    query = torch.cat(
        [q[-ql:] for (ql, _), (q, _, _) in zip(rows, sequences, strict=True)]
    ).half()
    return Batch(rows, cam, sequences, kv_cache, query)


def run_layer(layer, batch: Batch, metadata, stats) -> torch.Tensor:
    """The impl's forward on ``batch`` (output poisoned first), statistics on."""
    layer.impl.vllm_flash_attn_version = 3  # undetectable without a GPU
    layer.impl.stats_path = str(stats)
    output = torch.full_like(batch.query, float("nan"))
    return layer.impl.forward(
        layer, batch.query, None, None, batch.kv_cache, metadata, output
    )


def check_rows(out, batch: Batch, config, sparse) -> None:
    """Requests in ``sparse`` match the reference under ``config`` (None: dense
    attention), the others dense attention."""
    start = 0
    for (q_len, seq_len), (q, k, v) in zip(batch.rows, batch.sequences, strict=True):
        rows_out = out[start : start + q_len].float()
        qh, kh, vh = q[-q_len:].half(), k.half(), v.half()
        if config is not None and (q_len, seq_len) in sparse:
            want, _, _ = flex_prefill_reference(qh, kh, vh, config, 0.125)
        else:
            want = dense_attention(qh, kh, vh, 0.125)
        assert not rows_out.isnan().any()
        assert rel_error(rows_out, want) < 2e-3
        start += q_len


@pytest.mark.parametrize(
    "rows", [DECODE_FIRST, SORTED_BY_LENGTH], ids=["decode-first", "sorted-by-length"]
)
def test_impl_matches_the_reference_end_to_end(rows, torch_flash_attention, tmp_path):
    model = Model()
    batch = random_batch(rows)
    metadata = model.builder.build(0, batch.cam)
    config = FlexPrefillConfig(**SETTINGS["flexprefill"])
    stats = tmp_path / "stats.jsonl"
    for layer in model.layers:
        check_rows(run_layer(layer, batch, metadata, stats), batch, config, SPARSE)
    # VLLM_FLEXPREFILL_STATS: one line per layer, counts consistent with the selection
    lines = flex_stats.read(stats)
    sparse_rows = [list(row) for row in rows if row in SPARSE]
    assert [line["requests"] for line in lines] == [sparse_rows, sparse_rows]
    for line in lines:
        causal = 4 * sum(
            ChunkGeometry(q, kv, 64).causal_block_mask().sum().item()
            for q, kv in sparse_rows
        )
        assert line["causal_blocks"] == causal
        assert line["selected_blocks"] == sum(map(sum, line["head_selected"])) < causal
        assert line["ran"] == "sparse"
        assert line["reason"] == "sparse: guard off (max_density 1)"
        assert len(line["head_patterns"]) == 2 and all(
            len(p) == 4 for p in line["head_patterns"]
        )


def test_statistics_that_cannot_be_written_never_stop_the_engine(
    monkeypatch, torch_flash_attention, tmp_path, caplog
):
    """Refused at start-up where the file cannot be opened; one that fails later (a
    full disk) stops the statistics, with one warning, not the layer call."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(flex_stats.STATS_ENV, str(blocked / "stats.jsonl"))
    with pytest.raises(ValueError, match="VLLM_FLEXPREFILL_STATS=.*cannot append"):
        flex_stats.stats_path()
    monkeypatch.delenv(flex_stats.STATS_ENV)
    model = Model()
    batch = random_batch(DECODE_FIRST)
    metadata = model.builder.build(0, batch.cam)
    config = FlexPrefillConfig(**SETTINGS["flexprefill"])
    with caplog.at_level("WARNING"):
        for layer in model.layers:
            out = run_layer(layer, batch, metadata, blocked / "stats.jsonl")
            check_rows(out, batch, config, SPARSE)
            assert layer.impl.stats_path is None
    assert (
        sum("cannot append to the statistics" in r.message for r in caplog.records) == 1
    )


# Per row of DECODE_FIRST, a request's own settings: the chunk after context asks for
# dense, the short prompt for a lower dense_threshold (it goes sparse), the long prompt
# for other gamma and tau and the vsgrid selection (the short one selects as the paper).
ASKED = {
    2: "dense",
    3: '{"dense_threshold": 64}',
    4: {"gamma": 0.95, "tau": 0.0, "selection": "vsgrid"},
}


def test_requests_with_their_own_settings_share_a_batch(
    torch_flash_attention, tmp_path
):
    """Through the logits processor vLLM builds (``--logits-processors``): each
    request is routed and searched under its own settings, in one batch."""
    model = Model()
    model.config.model_config.logits_processors = [HOOK]
    processor = RequestSettings(model.config, torch.device("cpu"), False)
    try:
        processor.update_state(
            BatchUpdate(
                len(DECODE_FIRST),
                [],
                [
                    (i, SamplingParams(extra_args={"flexprefill": value}), [], [])
                    for i, value in ASKED.items()
                ],
                [],
            )
        )
        batch = random_batch(DECODE_FIRST, seed=3)
        metadata = model.builder.build(0, batch.cam)
        (route,) = metadata.routes.values()
        assert route.plan.table_row.tolist() == [3, 4]
        # the metrics' prefill tokens by path (the decodes are no prefill)
        assert model.builder.metrics.counts.prefill_tokens == {
            "sparse": 100 + 300,
            "dense": 200 + 40,
        }
        server = FlexPrefillConfig(**SETTINGS["flexprefill"])
        own = {
            (100, 100): server.with_overrides({"dense_threshold": 64}),
            (300, 300): server.with_overrides(ASKED[4]),
        }
        assert route.configs(server) == tuple(own.values())
        stats = tmp_path / "stats.jsonl"
        for layer in model.layers:
            out = run_layer(layer, batch, metadata, stats)
            start = 0
            for (q_len, seq_len), (q, k, v) in zip(
                batch.rows, batch.sequences, strict=True
            ):
                qh, kh, vh = q[-q_len:].half(), k.half(), v.half()
                if (q_len, seq_len) in own:
                    config = own[q_len, seq_len]
                    want, _, _ = flex_prefill_reference(qh, kh, vh, config, 0.125)
                else:
                    want = dense_attention(qh, kh, vh, 0.125)
                rows = out[start : start + q_len].float()
                assert rel_error(rows, want) < 2e-3, (q_len, seq_len)
                start += q_len
        # VLLM_FLEXPREFILL_STATS: each request's settings as it ran
        for line in flex_stats.read(stats):
            assert line["requests"] == [[100, 100], [300, 300]]
            assert [s["dense_threshold"] for s in line["settings"]] == [64, 256]
            assert [
                (s["gamma"], s["tau"], s["selection"]) for s in line["settings"]
            ] == [
                (server.gamma, server.tau, "paper"),
                (0.95, 0.0, "vsgrid"),
            ]
    finally:
        RequestSettings.current = None


def test_an_engine_without_the_hook_reads_no_request_settings():
    """Requests' own settings belong to the engine whose logits processor read them:
    another engine of the process, started without ``--logits-processors``, routes
    by the server's settings alone."""
    reading = Model()
    reading.config.model_config.logits_processors = [HOOK]
    processor = RequestSettings(reading.config, torch.device("cpu"), False)
    try:
        dense = SamplingParams(extra_args={"flexprefill": "dense"})
        processor.update_state(BatchUpdate(1, [], [(0, dense, [], [])], []))
        rows = batch_metadata([(300, 300)])
        (route,) = reading.builder.build(0, rows).routes.values()
        assert route.plan is None
        (route,) = Model().builder.build(0, rows).routes.values()
        assert route.plan.table_row.tolist() == [0]
    finally:
        RequestSettings.current = None


FP8_SCALES = {"q": 0.02, "k": 0.015, "v": 0.01}  # real = stored x scale


def test_an_fp8_cache_and_fp8_queries_match_the_reference_on_dequantised_values(
    torch_flash_attention, tmp_path
):
    """``--kv-cache-dtype fp8``: the cache holds e4m3 bytes and vLLM's attention layer
    hands over fp8 queries; sparse rows read them with the layer's scales, dense rows
    go to FlashAttention with the same scales as descale factors."""
    model = Model(kv_cache_dtype="fp8")
    batch = random_batch(DECODE_FIRST, seed=2)
    fp8 = torch.float8_e4m3fn

    def stored(x, scale):
        return (x.float() / scale).to(fp8)

    cache = batch.kv_cache.float()  # NaN in the pages' stale slots: e4m3 keeps it
    kv_cache = torch.stack(
        [stored(cache[:, 0], FP8_SCALES["k"]), stored(cache[:, 1], FP8_SCALES["v"])], 1
    )
    query = stored(batch.query, FP8_SCALES["q"])
    # the values the kernels and FlashAttention see, dequantised
    real = {
        "q": query.float() * FP8_SCALES["q"],
        "k": kv_cache[:, 0].float() * FP8_SCALES["k"],
        "v": kv_cache[:, 1].float() * FP8_SCALES["v"],
    }
    for layer in model.layers:
        for name, value in FP8_SCALES.items():
            getattr(layer, f"_{name}_scale").fill_(value)
    metadata = model.builder.build(0, batch.cam)
    config = FlexPrefillConfig(**SETTINGS["flexprefill"])
    for layer in model.layers:
        layer.impl.vllm_flash_attn_version = 3
        output = torch.full(query.shape, float("nan"), dtype=torch.float16)
        out = layer.impl.forward(
            layer, query, None, None, kv_cache.view(torch.uint8), metadata, output
        )
        start = 0
        for i, (q_len, seq_len) in enumerate(DECODE_FIRST):
            tokens = torch.arange(seq_len)
            pages = batch.cam.block_table_tensor[i, tokens // PAGE].long()
            q = real["q"][start : start + q_len]
            k, v = (real[x][pages, tokens % PAGE] for x in "kv")
            if (q_len, seq_len) in SPARSE:
                want, _, _ = flex_prefill_reference(q, k, v, config, 0.125)
            else:
                want = dense_attention(q, k, v, 0.125)
            rows = out[start : start + q_len]
            assert not rows.isnan().any()
            assert rel_error(rows, want) < 2e-3, (q_len, seq_len)
            start += q_len


GUARDED = {
    "flexprefill": dict(
        SETTINGS["flexprefill"],
        gamma=0.6,
        # layer 0 selects more than 5% of its blocks: it goes dense; layer 1 less
        # than 99%: it stays sparse
        max_density=0.99,
        layers=[{"first": 0, "last": 0, "max_density": 0.05}],
    )
}
GUARDED_ROWS = [(1, 300), (512, 1024), (40, 900)]


def test_the_guard_runs_dense_layers_through_flashattention(
    torch_flash_attention, tmp_path
):
    model = Model(**GUARDED)
    batch = random_batch(GUARDED_ROWS, seed=1)
    stats = tmp_path / "stats.jsonl"
    names = [layer.layer_name for layer in model.layers]
    configs = [FlexPrefillConfig(**GUARDED["flexprefill"]).for_layer(i) for i in (0, 1)]

    def step(expected_modes):
        metadata = model.builder.build(0, batch.cam)
        assert [metadata.modes[name] for name in names] == expected_modes
        all_sparse = set(expected_modes) == {Mode.SPARSE}
        assert (metadata.dense_batch is None) == all_sparse
        start = len(flex_stats.read(stats))
        layers = zip(model.layers, configs, expected_modes, strict=True)
        for layer, config, mode in layers:
            out = run_layer(layer, batch, metadata, stats)
            sparse = mode is Mode.SPARSE
            check_rows(out, batch, config if sparse else None, sparse={(512, 1024)})
        return flex_stats.read(stats, start)

    # an engine's first long prefills: both layers probe (search, then dense)
    for lines in (step([Mode.PROBE, Mode.PROBE]), step([Mode.PROBE, Mode.PROBE])):
        assert [line["ran"] for line in lines] == ["dense", "dense"]
        for line in lines:
            assert line["reason"] == "probe: density not measured yet"
        # layer 0's request selects more than 5%: its search takes every block
        assert lines[0]["selected_blocks"] == lines[0]["causal_blocks"]
        assert 0 < lines[1]["selected_blocks"] < lines[1]["causal_blocks"]
    # step 3: step 1's densities are in: layer 0 runs dense without a search
    lines = step([Mode.DENSE, Mode.SPARSE])
    assert [line["ran"] for line in lines] == ["dense", "sparse"]
    assert lines[0]["selected_blocks"] is None
    assert lines[0]["reason"].startswith("dense: density")
    assert lines[0]["reason"].endswith("above max_density 0.05")
    assert lines[1]["reason"].endswith("<= max_density 0.99")
    assert flex_stats.computed_density(lines) > flex_stats.density(lines)
    # a batch whose longest sparse request is in a longer key-length bucket: the layer
    # dense at the shorter length probes, the sparse one starts sparse
    longer = batch_metadata([(1, 300), (512, 2048), (40, 900)], pages_per_request=128)
    metadata = model.builder.build(0, longer)
    assert metadata.length_bucket == length_bucket(2048) != length_bucket(1024)
    assert [metadata.modes[name] for name in names] == [Mode.PROBE, Mode.SPARSE]
    # a new engine starts afresh
    assert set(Model(**GUARDED).builder.build(0, batch.cam).modes.values()) == {
        Mode.PROBE
    }


# ---------------------------------------------------------------- config mistakes


def test_a_string_under_flexprefill_names_the_preset_or_file(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    assert resolve_config({"flexprefill": "llama-3.1-8b-instruct"}) == resolve_config(
        {"flexprefill": {"config": "llama-3.1-8b-instruct"}}
    )
    assert resolve_config({"flexprefill": "llama-3.1-8b-instruct"}).gamma == 0.95
    path = tmp_path / "mine.yaml"
    path.write_text("gamma: 0.8\n")
    assert resolve_config({"flexprefill": str(path)}).gamma == 0.8


@pytest.mark.parametrize(
    "settings, expected",
    [
        (3, "must be a preset name or YAML path, or a mapping of settings"),
        (["gamma", 0.9], "got list ['gamma', 0.9]"),
        ({"config": 3}, '"config" must be a preset name (default, '),
        (
            {"confg": "default"},
            "unknown field 'confg' (got 'default'); allowed fields: config",
        ),
    ],
)
def test_other_values_under_flexprefill_are_refused(settings, expected):
    with pytest.raises(ConfigError) as info:
        resolve_config({"flexprefill": settings})
    assert str(info.value).startswith('--additional-config "flexprefill"')
    assert expected in str(info.value) and "got " in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "FlexPrefill",
        "FLEXPREFILL",
        "flexprefil",
        "flex_prefill",
        "flexprefill_config",
        "FlexPrefillConfig",
        "flexprefill.gamma",
    ],
)
def test_a_misspelt_flexprefill_key_is_refused(key):
    with pytest.raises(ConfigError) as info:
        resolve_config({key: {"gamma": 0.95}})
    assert str(info.value).startswith(
        f"--additional-config key {key!r} is not 'flexprefill'"
    )


def test_settings_without_the_flexprefill_wrapper_are_refused():
    with pytest.raises(ConfigError) as info:
        resolve_config({"gamma": 0.95})
    assert str(info.value) == (
        "--additional-config key 'gamma' is a FlexPrefill setting; allowed only under "
        """"flexprefill": --additional-config '{"flexprefill": {"gamma": 0.95}}'"""
    )


@pytest.mark.parametrize("source", ["llama-3.1-8b-instruct", "/srv/mine.yaml"])
def test_a_config_source_without_the_flexprefill_wrapper_is_refused(source):
    with pytest.raises(ConfigError) as info:
        resolve_config({"config": source})
    assert str(info.value).startswith(
        "--additional-config key 'config' is a FlexPrefill setting; allowed only under "
        '"flexprefill"'
    )


def test_other_plugins_keys_pass_and_share_the_memoised_config(monkeypatch):
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    mine = {"flexprefill": {"gamma": 0.8}}
    with_others = mine | {"other_plugin": {"prefill": 1}, "config": {"depth": 2}}
    assert resolve_config(with_others) is resolve_config(mine)


@pytest.mark.parametrize("settings", ["", {"config": ""}, {"config": "", "tau": 0.2}])
def test_an_empty_config_name_is_refused(settings, monkeypatch):
    """It used to fall through to $VLLM_FLEXPREFILL_CONFIG or the default preset."""
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_config({"flexprefill": settings})
    assert str(info.value).startswith(
        '--additional-config "flexprefill" "config" must be a preset name (default, '
    ) and str(info.value).endswith("got str ''")


def test_a_config_that_is_not_found_names_where_it_was_given(monkeypatch):
    monkeypatch.setenv("VLLM_FLEXPREFILL_CONFIG", "no-such-preset")
    with pytest.raises(ConfigError) as info:
        resolve_config(None)
    assert str(info.value).startswith(
        "$VLLM_FLEXPREFILL_CONFIG: FlexPrefill config 'no-such-preset' not found"
    )
    with pytest.raises(ConfigError) as info:
        resolve_config({"flexprefill": "other-preset"})
    assert str(info.value).startswith(
        '--additional-config "flexprefill" "config": FlexPrefill config '
        "'other-preset' not found"
    )


def test_numbers_of_other_types_in_the_additional_config_are_numbers(monkeypatch):
    """``LLM(additional_config=...)`` from Python may carry numpy's numbers."""
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)
    config = resolve_config(
        {"flexprefill": {"gamma": np.float32(0.5), "min_budget": np.int64(512)}}
    )
    assert (config.gamma, config.min_budget) == (0.5, 512)


def test_an_additional_config_that_is_no_mapping_holds_no_settings(monkeypatch):
    """vLLM types it ``dict | SupportsHash``: another plugin's object passes."""
    monkeypatch.delenv("VLLM_FLEXPREFILL_CONFIG", raising=False)

    class Hashable:
        def compute_hash(self) -> str:
            return "other plugin"

    assert resolve_config(Hashable()) == resolve_config(None)


def test_a_misspelt_key_stops_the_model_from_being_built():
    with pytest.raises(ConfigError, match="key 'flexprefil' is not 'flexprefill'"):
        Model(flexprefil={"gamma": 0.95})


def test_our_environment_variables_are_known_to_vllm(monkeypatch, tmp_path):
    import vllm.envs

    stats_file = str(tmp_path / "stats.jsonl")
    monkeypatch.setenv(CONFIG_ENV, "default")
    monkeypatch.setenv(flex_stats.STATS_ENV, stats_file)
    monkeypatch.setenv("VLLM_FLEXPREFILL_CACHE", str(tmp_path))
    register()
    register()  # idempotent
    vllm.envs.validate_environ(hard_fail=True)  # no "Unknown vLLM environment variable"
    assert stats_file == vllm.envs.VLLM_FLEXPREFILL_STATS
