"""The FLEXPREFILL attention backend for vLLM 0.24 (V1): FlashAttention with sparse
prefill.

A thin layer over vLLM's FLASH_ATTN backend (``flash_attn.py``), which it subclasses:

* Backend: FlashAttention's KV cache layout and dtypes (fp8 e4m3 with FA3 on Hopper),
  KV-cache update and validation, minus what the sparse path cannot serve (sinks,
  per-head quantisation scales, MLA, encoder attention, head sizes other than the
  multiples of 16 in 32-256, batch invariance, non-causal attention): vLLM refuses
  those at start-up with its "not valid for this configuration" message listing the
  reason.
* Builder: per batch, routes each request. A prefill chunk whose sequence reaches the
  layer's ``dense_threshold`` (and that holds at least one block of queries) goes to
  FlexPrefill; decode tokens and short prefills go to FlashAttention exactly as the
  FLASH_ATTN backend runs them; a request's own settings (``request_settings.py``)
  take part (its ``dense_threshold``, or ``"dense"``). Both orderings vLLM produces
  (decodes first in the V1 runner, ascending query length in Model Runner V2) work:
  the dense rows are passed to FlashAttention as a prefix when they are one, else
  gathered. A batch no request of which holds a block of queries (decode steps) gets
  FlashAttention's metadata unchanged, built without reading the sequence lengths, so
  decode CUDA graphs are captured (``UNIFORM_BATCH``); mixed batches run piecewise,
  attention eager.
* Impl: FlashAttention for the dense rows, the FlexPrefill kernels for the sparse rows
  (each request under its own settings), reading keys and values (cached context
  included) straight from the paged cache; an fp8 cache and the fp8 queries vLLM
  quantises for it are dequantised in registers with the layer's scales. Layers the
  sparse path cannot serve at run time (sliding window, ALiBi, logit soft-capping,
  chunked local attention) run dense, with one warning per model.
* Density guard (``guard.py``): per step the builder asks each layer with sparse rows
  whether it runs sparse, dense (FlashAttention over the whole batch: its recent
  selections at this key length kept more than ``max_density`` of the blocks) or as a
  probe (the search, to measure, then FlashAttention).
* Metrics (``metrics.py``): the builder counts prefill tokens by path and, through the
  guard, modes, densities and patterns, for vLLM's ``/metrics``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from vllm.config import (
    VllmConfig,
    get_current_vllm_config,
    get_layers_from_vllm_config,
    set_current_vllm_config,
)
from vllm.logger import init_logger
from vllm.model_executor.layers.attention import Attention, ChunkedLocalAttention
from vllm.model_executor.models.utils import extract_layer_index
from vllm.platforms import current_platform
from vllm.utils.torch_utils import is_quantized_kv_cache
from vllm.v1.attention.backend import (
    AttentionCGSupport,
    AttentionType,
    CommonAttentionMetadata,
)
from vllm.v1.attention.backends.flash_attn import (
    FlashAttentionBackend,
    FlashAttentionImpl,
    FlashAttentionMetadata,
    FlashAttentionMetadataBuilder,
)
from vllm.v1.attention.backends.utils import get_kv_cache_layout

from . import request_settings
from .config import FlexPrefillConfig
from .guard import DensityGuard, Mode, length_bucket, live_batch
from .kernels import (
    KVSource,
    SparsePlan,
    find_blocks,
    flex_prefill_forward,
    hopper_kernel_runs,
)
from .metrics import BuilderMetrics
from .plugin import resolve_config
from .request_settings import RequestSetting, batch_settings
from .stats import record as record_stats
from .stats import stats_path
from .workspace import StepScratch, compile_kernels

logger = init_logger(f"vllm.{__name__}")  # under vLLM's configured "vllm" logger

SPARSE_PAGE_SIZE = 128


class Routing(NamedTuple):
    """The settings that decide which requests of a batch go sparse, and their plan's
    block grid: layers that agree on them share one :class:`Route` per batch."""

    block_size: int
    dense_threshold: int

    @classmethod
    def of(cls, config: FlexPrefillConfig | None) -> Routing | None:
        """None for a layer that runs dense."""
        return (
            None if config is None else cls(config.block_size, config.dense_threshold)
        )


def _unsupported(cls) -> bool:
    return False


class FlexPrefillBackend(FlashAttentionBackend):
    @staticmethod
    def get_name() -> str:
        # the registered slot; "FLEXPREFILL" is its alias (see plugin.py)
        return "CUSTOM"

    @staticmethod
    def get_impl_cls() -> type[FlexPrefillImpl]:
        return FlexPrefillImpl

    @staticmethod
    def get_builder_cls() -> type[FlexPrefillMetadataBuilder]:
        return FlexPrefillMetadataBuilder

    @classmethod
    def supports_head_size(cls, head_size: int) -> bool:
        return head_size % 16 == 0 and 32 <= head_size <= 256

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return attn_type == AttentionType.DECODER

    # Features the sparse kernels do not implement: vLLM refuses them at start-up.
    supports_sink = classmethod(_unsupported)
    supports_mm_prefix = classmethod(_unsupported)
    supports_non_causal = classmethod(_unsupported)
    supports_batch_invariance = classmethod(_unsupported)
    supports_per_head_quant_scales = classmethod(_unsupported)

    @classmethod
    def get_preferred_block_size(cls, default_block_size: int) -> int:
        """128-token KV pages unless ``--block-size`` says otherwise: a 128-key tile of
        the sparse kernels is then one page, loaded by one bulk copy (TMA) instead of a
        page lookup per 16 rows. FlashAttention decodes from them as fast."""
        return (
            SPARSE_PAGE_SIZE
            if cls.supports_block_size(SPARSE_PAGE_SIZE)
            else default_block_size
        )


@dataclass
class Route:
    """How one routing splits the batch: FlexPrefill rows (``plan``) and the rest,
    for FlashAttention (``dense``; ``gather`` holds their token indices unless they are
    the batch's first tokens)."""

    plan: SparsePlan | None
    dense: FlashAttentionMetadata | None
    gather: torch.Tensor | None = None
    # [R] False: the kernels' per-request dense flags
    no_dense_requests: torch.Tensor | None = None
    # per sparse request, the settings it asked for (None: the server's)
    settings: tuple[RequestSetting | None, ...] = ()
    # 0-d device bool: False in vLLM's dummy batches, whose selections the density
    # guard ignores (guard.live_batch)
    live: torch.Tensor | None = None
    # per layer config, the configs its sparse requests run with (see configs)
    _configs: dict = field(default_factory=dict)

    def configs(
        self, config: FlexPrefillConfig
    ) -> FlexPrefillConfig | tuple[FlexPrefillConfig, ...]:
        """What the sparse requests run with on a layer whose settings are ``config``:
        ``config`` itself unless a request asked for others, else one per request."""
        if not any(self.settings):
            return config
        if config not in self._configs:
            self._configs[config] = tuple(
                config if s is None else s.config_over(config) for s in self.settings
            )
        return self._configs[config]


@dataclass
class FlexPrefillMetadata:
    block_table: torch.Tensor  # [num_reqs, max_pages] int32, vLLM's
    # one per routing the layers use
    routes: dict[Routing | None, Route] = field(default_factory=dict)
    guard: DensityGuard | None = None
    # the guard's key-length bucket of this batch (its longest sparse request's)
    length_bucket: int = 0
    # the guard's mode for each layer with sparse rows in this batch
    modes: dict[str, Mode] = field(default_factory=dict)
    # FlashAttention over every row, for the layers not in Mode.SPARSE
    dense_batch: FlashAttentionMetadata | None = None


class FlexPrefillMetadataBuilder(FlashAttentionMetadataBuilder):
    # Only uniform (decode) batches are captured, through FlashAttention's metadata.
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.UNIFORM_BATCH
    supports_update_block_table: bool = False

    def __init__(
        self,
        kv_cache_spec,
        layer_names: list[str],
        vllm_config: VllmConfig,
        device: torch.device,
    ):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        # A representative config per routing, each layer's routing and the density
        # guard: known once the layers' impls exist (_route_layers).
        self.routings: dict[Routing | None, FlexPrefillConfig | None] | None = None
        self.layer_routing: dict[str, Routing | None] = {}
        self.guard: DensityGuard | None = None
        # known with them: the fewest queries a sparse request has, whether this
        # builder counts the steps' prefill tokens, the most queries a decode row has,
        # whether the engine reads requests' own settings
        self.min_sparse_queries = sys.maxsize
        self.counts_prefill = False
        self.decode_queries = 1
        self.reads_requests = False
        self.metrics = BuilderMetrics(
            ranks=vllm_config.parallel_config.tensor_parallel_size
        )
        block_sizes = resolve_config(vllm_config.additional_config).block_sizes
        # the keys a step's sparse requests may hold together: what the profiling
        # pass reserved the search's scratch for (the KV cache's capacity, known by
        # now); requests sharing prefix-cached pages could exceed it
        blocks = vllm_config.cache_config.num_gpu_blocks
        self.key_budget = StepScratch.of(vllm_config, min(block_sizes)).key_budget(
            blocks * kv_cache_spec.block_size if blocks else None
        )
        self.over_budget_logged = False
        # the KV cache's layout (a KV connector may ask for head-major pages, which
        # the portable kernel reads): vLLM's answer needs its config current
        with set_current_vllm_config(vllm_config):
            self.token_major_pages = get_kv_cache_layout() == "NHD"
        compile_kernels(vllm_config, kv_cache_spec, device, block_sizes)

    @classmethod
    def get_cudagraph_support(cls, vllm_config, kv_cache_spec) -> AttentionCGSupport:
        return cls._cudagraph_support

    def use_cascade_attention(self, *args, **kwargs) -> bool:
        return False

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
    ) -> FlexPrefillMetadata:
        cam = common_attn_metadata
        if self.routings is None:
            self._route_layers()
        starts = cam.query_start_loc_cpu[: cam.num_reqs + 1].tolist()
        q_lens = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        metadata = FlexPrefillMetadata(cam.block_table_tensor)
        if max(q_lens, default=0) < self.min_sparse_queries:
            # No request can run sparse (decode steps, whose CUDA graphs are captured,
            # short chunks, layers that all run dense): FlashAttention's metadata as
            # FLASH_ATTN builds it, without reading the sequence lengths.
            dense = super().build(0, cam, fast_build)
            metadata.routes = {routing: Route(None, dense) for routing in self.routings}
            self._count_prefill(q_lens, set())
            self.guard.settle()
            return metadata
        seq_bound = cam.seq_lens_cpu_upper_bound
        seq_lens = seq_bound if seq_bound is not None else cam.seq_lens.cpu()
        kv_lens = seq_lens[: cam.num_reqs].tolist()
        settings = (
            batch_settings(cam.num_reqs)
            if self.reads_requests
            else (None,) * cam.num_reqs
        )

        def runs_sparse(config: FlexPrefillConfig, i: int) -> bool:
            asked = settings[i]
            own = config if asked is None else asked.config_over(config)
            return own is not None and own.runs_sparse(q_lens[i], kv_lens[i])

        sparse_rows = {
            routing: []
            if config is None
            else self._within_key_budget(
                [i for i in range(cam.num_reqs) if runs_sparse(config, i)], kv_lens
            )
            for routing, config in self.routings.items()
        }
        # FlashAttention metadata per set of dense rows. A batch with sparse rows runs
        # eagerly and may need several: each gets its own FA3 schedule (see
        # _dense_metadata).
        eager = any(sparse_rows.values())
        built: dict[tuple[int, ...], tuple] = {}

        def dense_for(rows: tuple[int, ...]) -> tuple:
            if rows not in built:
                built[rows] = self._dense_metadata(
                    cam, rows, starts, q_lens, kv_lens, fast_build, eager
                )
            return built[rows]

        for routing, config in self.routings.items():
            sparse = sparse_rows[routing]
            dense = tuple(sorted(set(range(cam.num_reqs)) - set(sparse)))
            if not sparse:
                metadata.routes[routing] = Route(None, *dense_for(dense))
                continue
            plan = SparsePlan.build(
                [q_lens[i] for i in sparse],
                [kv_lens[i] for i in sparse],
                config.block_size,
                self.device,
                q_starts=[starts[i] for i in sparse],
                table_rows=sparse,
            )
            no_dense = torch.zeros(len(sparse), dtype=torch.bool, device=self.device)
            asked = tuple(settings[i] for i in sparse)
            live = live_batch(cam.block_table_tensor, sparse[0])
            metadata.routes[routing] = Route(
                plan, *dense_for(dense), no_dense, asked, live
            )
        sparse = set().union(*sparse_rows.values())
        self._count_prefill(q_lens, sparse)
        # The density guard: each layer with sparse rows runs sparse, dense or as a
        # probe; the last two need FlashAttention over the whole batch.
        layers = [
            name
            for name, routing in self.layer_routing.items()
            if metadata.routes[routing].plan is not None
        ]
        if layers:
            metadata.guard = self.guard
            metadata.length_bucket = length_bucket(max(kv_lens[i] for i in sparse))
            metadata.modes = self.guard.begin_step(layers, metadata.length_bucket)
            if any(mode is not Mode.SPARSE for mode in metadata.modes.values()):
                metadata.dense_batch, _ = dense_for(tuple(range(cam.num_reqs)))
        else:
            self.guard.settle()
        return metadata

    def _route_layers(self) -> None:
        """Each layer's settings and routing, the density guard, and whether this
        builder counts the steps' prefill tokens: known once the layers' impls exist
        (the first build)."""
        every = {
            name: layer.impl.sparse_config(layer)
            for name, layer in get_layers_from_vllm_config(
                self.vllm_config, Attention
            ).items()
            if isinstance(layer.impl, FlexPrefillImpl)
        }
        configs = {name: every[name] for name in self.layer_names if name in every}
        self.routings = {Routing.of(config): config for config in configs.values()}
        self.layer_routing = {name: Routing.of(c) for name, c in configs.items()}
        self.guard = DensityGuard(
            configs,
            self.device,
            self.metrics,
            hopper_layers={
                name
                for name, config in configs.items()
                if config is not None and self._hopper_kernel_runs(config.block_size)
            },
        )
        # a request needs a block of queries to run sparse (per-request settings keep
        # the server's block size)
        self.min_sparse_queries = min(
            (c.block_size for c in configs.values() if c is not None),
            default=sys.maxsize,
        )
        # One builder counts each step's prefill tokens (vLLM makes one per KV-cache
        # group, and each sees every step): the one of the first layer that can run
        # sparse, else of the first layer.
        sparse = [name for name, config in every.items() if config is not None]
        first = min(sparse or every, key=extract_layer_index, default=None)
        self.counts_prefill = first in configs
        # requests' own settings, where this engine reads them (another engine of the
        # process may)
        self.reads_requests = request_settings.enabled(
            self.vllm_config.model_config.logits_processors
        )
        speculative = self.vllm_config.speculative_config
        # the most queries a decode row holds (speculative decoding's verification)
        self.decode_queries = 1 + (
            speculative.num_speculative_tokens if speculative else 0
        )

    def _hopper_kernel_runs(self, block_size: int) -> bool:
        """Whether the Hopper attention kernel computes this builder's layers' blocks
        at ``block_size`` (an fp8 cache or the head-major HND layout, for two, take the
        portable kernel)."""
        dtype = self.vllm_config.model_config.dtype
        fp8 = is_quantized_kv_cache(self.vllm_config.cache_config.cache_dtype)
        return self.token_major_pages and hopper_kernel_runs(
            self.device,
            torch.float8_e4m3fn if fp8 else dtype,
            self.kv_cache_spec.dtype,
            self.kv_cache_spec.head_size,
            block_size,
            self.kv_cache_spec.block_size,
        )

    def _count_prefill(self, q_lens: list[int], sparse: set[int]) -> None:
        """Count the step's prefill tokens (rows of more queries than a decode row
        holds) by path, ``sparse`` the rows that run sparse on some layer, and write
        the metrics' snapshot when due."""
        if self.counts_prefill:
            prefill = [i for i, n in enumerate(q_lens) if n > self.decode_queries]
            self.metrics.count_prefill(
                sum(q_lens[i] for i in prefill if i in sparse),
                sum(q_lens[i] for i in prefill if i not in sparse),
            )
        self.metrics.maybe_write()

    def _within_key_budget(self, rows: list[int], kv_lens: list[int]) -> list[int]:
        """``rows`` (a layer's sparse requests, in batch order) while their keys fit
        the step's :attr:`key_budget`; the rest run dense (said once in the log)."""
        kept, keys = [], 0
        for i in rows:
            if keys + kv_lens[i] <= self.key_budget:
                kept.append(i)
                keys += kv_lens[i]
        if len(kept) < len(rows) and not self.over_budget_logged:
            logger.warning(
                "FlexPrefill: a step's sparse requests hold %d keys, more than the "
                "%d its prefill scratch was reserved for (the KV cache's capacity; "
                "requests that share prefix-cached pages count them once each): %d "
                "of them run dense (FlashAttention). Said once.",
                sum(kv_lens[i] for i in rows),
                self.key_budget,
                len(rows) - len(kept),
            )
            self.over_budget_logged = True
        return kept

    def _dense_metadata(self, cam, rows, starts, q_lens, kv_lens, fast_build, eager):
        """FlashAttention metadata for the requests ``rows`` (and their token indices
        when they are not the batch's leading tokens).

        FlashAttention's builder writes an FA3 schedule into one buffer it keeps for
        CUDA graphs and hands out a view of it, so a second build in the same step
        would overwrite the first's: for an ``eager`` batch (never captured) each
        metadata gets its own copy."""
        if not rows:
            return None, None
        dense, tokens = self._flash_metadata(
            cam, rows, starts, q_lens, kv_lens, fast_build
        )
        if eager and dense.scheduler_metadata is not None:
            dense.scheduler_metadata = dense.scheduler_metadata.clone()
        return dense, tokens

    def _flash_metadata(self, cam, rows, starts, q_lens, kv_lens, fast_build):
        """FlashAttentionMetadataBuilder.build over the requests ``rows``, and their
        token indices when they are not the batch's leading tokens."""
        if rows == tuple(range(len(rows))):
            sub = (
                cam
                if len(rows) == cam.num_reqs
                else cam.unpadded(starts[len(rows)], len(rows))
            )
            return super().build(0, sub, fast_build), None
        tokens = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in rows]).to(
            self.device, non_blocking=True
        )
        sub_starts = torch.tensor(
            [0] + [q_lens[i] for i in rows], dtype=torch.int32
        ).cumsum(0, dtype=torch.int32)
        device_index = torch.tensor(rows, dtype=torch.long).to(
            self.device, non_blocking=True
        )
        sub = cam.replace(
            query_start_loc=sub_starts.to(self.device, non_blocking=True),
            query_start_loc_cpu=sub_starts,
            seq_lens=cam.seq_lens[device_index],
            num_reqs=len(rows),
            num_actual_tokens=len(tokens),
            max_query_len=max(q_lens[i] for i in rows),
            max_seq_len=max(kv_lens[i] for i in rows),
            block_table_tensor=cam.block_table_tensor[device_index],
            slot_mapping=cam.slot_mapping[tokens],
            seq_lens_cpu_upper_bound=torch.tensor(
                [kv_lens[i] for i in rows], dtype=torch.int32
            ),
            positions=None,
            is_prefilling=None,
            logits_indices_padded=None,
            num_logits_indices=None,
            mm_req_doc_ranges=None,
            _seq_lens_cpu=None,
            _num_computed_tokens_cpu=None,
            _num_computed_tokens_cache=None,
        )
        return super().build(0, sub, fast_build), tokens


class FlexPrefillImpl(FlashAttentionImpl):
    def __init__(self, *args, dual_chunk_attention_config=None, **kwargs) -> None:
        # Qwen2-style models with dual-chunk attention (Qwen2.5-*-1M) pass its config
        # (and their layer_idx): their rotary embedding concatenates five query
        # variants, which only vLLM's removed dual-chunk backend read.
        if dual_chunk_attention_config is not None:
            raise ValueError(
                "FLEXPREFILL does not support dual-chunk attention: the model config "
                f"sets dual_chunk_attention_config={dual_chunk_attention_config!r} "
                "(as Qwen2.5-*-1M do), which no attention backend of vLLM 0.24 "
                "implements; allowed: models without it"
            )
        super().__init__(*args, **kwargs)
        if self.dcp_world_size > 1:
            raise ValueError(
                "FLEXPREFILL does not support decode context parallelism "
                "(--decode-context-parallel-size > 1); use FLASH_ATTN"
            )
        vllm_config = get_current_vllm_config()
        self.flex_config = resolve_config(vllm_config.additional_config)
        self.flex_config.check_layer_count(
            vllm_config.model_config.get_total_num_hidden_layers()
        )
        logger.info_once("FlexPrefill configuration: %s", self.flex_config.describe())
        reads_requests = request_settings.enabled(
            vllm_config.model_config.logits_processors
        )
        if reads_requests and vllm_config.parallel_config.use_ubatching:
            # each micro-batch's metadata is built from a slice of the batch, whose
            # first row is not the persistent batch's slot 0
            raise ValueError(
                "FLEXPREFILL reads requests' own settings (--logits-processors "
                f"{request_settings.HOOK}) by batch slot, which micro-batching "
                "(--enable-dbo, --ubatch-size > 1) does not keep; allowed: one of "
                "the two"
            )
        if not reads_requests:
            logger.info_once(
                "FlexPrefill: requests' own settings (a `flexprefill` entry in their "
                "extra arguments) are not read; start the engine with "
                "--logits-processors %s to read them",
                request_settings.HOOK,
            )
        self.dense_reason = (
            "sliding-window attention"
            if self.sliding_window != (-1, -1)
            else "ALiBi"
            if self.alibi_slopes is not None
            else "logit soft-capping"
            if self.logits_soft_cap
            else None
        )
        self._sparse_config: dict[str, FlexPrefillConfig | None] = {}
        self.stats_path = stats_path()
        self.step_scratch = StepScratch.of(
            vllm_config, min(self.flex_config.block_sizes)
        )

    def sparse_config(self, layer: Attention) -> FlexPrefillConfig | None:
        """This layer's FlexPrefill settings, or None if it runs dense."""
        name = layer.layer_name
        if name not in self._sparse_config:
            reason = self.dense_reason
            if isinstance(layer, ChunkedLocalAttention):
                # vLLM's builder wrapper hands each local chunk over as a request of
                # its own (Llama 4's attention_chunk_size)
                reason = "chunked local attention"
            if reason is not None:
                logger.warning_once(
                    "FlexPrefill runs %s layers dense (FlashAttention): the sparse "
                    "kernels do not implement it",
                    reason,
                )
                self._sparse_config[name] = None
            else:
                self._sparse_config[name] = self.flex_config.for_layer(
                    extract_layer_index(name)
                )
        return self._sparse_config[name]

    def forward(
        self,
        layer: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: FlexPrefillMetadata,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attn_metadata is None:  # a dummy run
            # vLLM's memory profiling runs before any KV cache exists: count the
            # sparse path's scratch there (once: not in later dummy runs)
            sparse = self.sparse_config(layer) is not None
            if sparse and query.is_cuda and kv_cache.numel() == 0:
                self.step_scratch.reserve(query.device)
            return output.fill_(0)
        name = layer.layer_name
        config = self.sparse_config(layer)
        route = attn_metadata.routes[Routing.of(config)]
        mode = attn_metadata.modes.get(name)
        if route.plan is None or mode is not Mode.SPARSE:
            # No sparse rows (FlashAttention over the batch's rows, exactly as
            # FLASH_ATTN), or the guard runs this layer dense (after a probe's search).
            dense = route.dense if route.plan is None else attn_metadata.dense_batch
            if mode is Mode.PROBE:
                self._probe(layer, query, kv_cache, attn_metadata, route, config)
            elif mode is Mode.DENSE and self.stats_path:
                self._record(layer, route, None, attn_metadata, mode)
            return super().forward(
                layer,
                query,
                key,
                value,
                kv_cache,
                dense,
                output,
                output_scale,
                output_block_scale,
            )
        if route.dense is not None:
            if route.gather is None:  # the dense rows lead the batch
                super().forward(layer, query, key, value, kv_cache, route.dense, output)
            else:
                dense_out = torch.empty_like(output[: route.gather.shape[0]])
                super().forward(
                    layer,
                    query[route.gather],
                    key,
                    value,
                    kv_cache,
                    route.dense,
                    dense_out,
                )
                output[route.gather] = dense_out
        result = flex_prefill_forward(
            query,
            self._kv_source(layer, kv_cache, attn_metadata),
            route.plan,
            route.configs(config),
            self.scale,
            route.no_dense_requests,
            output,
            q_scale=self._query_scale(layer, query),
        )
        self._measured(layer, route, result, attn_metadata, mode)
        return output

    def _probe(self, layer, query, kv_cache, attn_metadata, route, config) -> None:
        """The search alone, for the guard to measure the layer's density."""
        result = find_blocks(
            query,
            self._kv_source(layer, kv_cache, attn_metadata),
            route.plan,
            route.configs(config),
            self.scale,
            route.no_dense_requests,
            self._query_scale(layer, query),
        )
        self._measured(layer, route, result, attn_metadata, Mode.PROBE)

    def _kv_source(self, layer, kv_cache, attn_metadata) -> KVSource:
        """The paged cache as the kernels read it: an fp8 cache (stored as bytes) as
        float8 e4m3, with the layer's key and value scales."""
        key_cache, value_cache = kv_cache.unbind(1)
        if not is_quantized_kv_cache(self.kv_cache_dtype):
            return KVSource(key_cache, value_cache, attn_metadata.block_table)
        fp8 = current_platform.fp8_dtype()
        return KVSource(
            key_cache.view(fp8),
            value_cache.view(fp8),
            attn_metadata.block_table,
            layer._k_scale,
            layer._v_scale,
        )

    @staticmethod
    def _query_scale(layer, query) -> torch.Tensor | None:
        """The scale of queries vLLM's attention layer quantised to fp8 (with an fp8
        cache), else None."""
        return layer._q_scale if query.dtype == current_platform.fp8_dtype() else None

    def _measured(self, layer, route, result, attn_metadata, mode) -> None:
        """Hand a search's selection to the guard (and the statistics file)."""
        attn_metadata.guard.record(
            layer.layer_name,
            attn_metadata.length_bucket,
            result.kv_count,
            sum(route.plan.causal_pairs) * self.num_heads,
            result.pattern,
            route.live,
        )
        if self.stats_path:
            self._record(layer, route, result, attn_metadata, mode)

    def _record(self, layer, route, result, attn_metadata, mode) -> None:
        name = layer.layer_name
        reason = attn_metadata.guard.state(name, attn_metadata.length_bucket).reason(
            mode
        )
        ran = "sparse" if mode is Mode.SPARSE else "dense"
        configs = route.configs(self.sparse_config(layer))
        try:
            record_stats(
                self.stats_path, name, route.plan, configs, result, self.num_heads,
                ran, reason,
            )  # fmt: skip
        except OSError as error:  # statistics never stop the engine (a full disk)
            logger.warning_once(
                "FlexPrefill: cannot append to the statistics file %s (%s); the "
                "layers stop writing statistics",
                self.stats_path,
                error.strerror,
            )
            self.stats_path = None
