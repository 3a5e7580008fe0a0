"""FlexPrefill's pattern search for a whole batch, on the device, with no host
synchronisation and no Python loop over heads or requests.

Kernels do every step (the probes, pooling, each head's pattern, the top-mass
selections, the query-aware grid, the vertical-slash budgets and top blocks, the block
lists); the glue in between is a few batched torch ops on ``[R, Hq, ...]`` tensors
(the vsgrid probes' choice, the grid rows' thresholds, the max_density test).
Requests of any ``selection`` share a batch: the paper's probe runs if any request
selects as the paper, the segment probes if any selects by vsgrid or rerank; every
kind ends in the grid and block lists, which a rerank request's sampled queries then
cut. Every step mirrors a function of ``vllm_flexprefill/reference.py``, the oracle
the tests hold this search to; nothing here calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vllm_flexprefill.blocks import cdiv
from vllm_flexprefill.config import FlexPrefillConfig
from vllm_flexprefill.selection import LOCAL_BLOCKS, RERANK_WIDTH, Pattern

from .block_index import build_block_index, take_every_block
from .pattern import head_patterns
from .plan import KVSource, SparsePlan
from .pooling import key_block_means, query_block_means
from .probe import probe
from .query_aware import query_aware_grid
from .rerank import keep_reranked, sampled_block_masses
from .segment_probe import SegmentProbes, segment_block_masses
from .sparse_attention import hopper_kernel_takes
from .top_mass import top_mass
from .utils import aligned
from .vertical_slash import top_blocks
from .vsgrid import candidate_thresholds, row_thresholds, vsgrid_estimate_into


@dataclass
class SearchResult:
    # [Hq, T, max_k_blocks] int32, sorted key blocks, diagonal last
    kv_index: torch.Tensor
    kv_count: torch.Tensor  # [Hq, T] int32
    pattern: torch.Tensor  # [R, Hq] int8 Pattern code


@dataclass
class SearchLayout:
    """Tensors that depend only on the plan, the head count and the requests' settings
    (built once per plan, head count and settings: see :func:`find_blocks`)."""

    # selection scores: the probe tokens [2, Hq, total_kv_len] first, then from here
    grid_start: int
    size: int  # (16-byte aligned) the query-aware grid [Hq, T, W]
    # [3 * R * Hq] int64: top-mass rows, the probe's (vertical | slash, request,
    # head), then the grid's (request, head), each one contiguous run of the scores
    row_start: torch.Tensor
    row_len: torch.Tensor  # int32, per top-mass row
    gamma: torch.Tensor  # float32, per top-mass row: its mass fraction
    max_len: int
    vsgrid: torch.Tensor  # [R] bool: requests of vsgrid (or rerank) selection
    rerank: torch.Tensor  # [R] bool: requests of rerank selection
    rerank_head: torch.Tensor  # [R] bool: those of them of rerank_budget head
    any_paper: bool
    any_vsgrid: bool
    any_rerank: bool
    row_vsgrid: torch.Tensor  # [T] bool: query blocks of vsgrid requests
    # [T] int32: candidates per kept block (a rerank request's RERANK_WIDTH, else 1)
    row_widen: torch.Tensor
    # per query block, for the vsgrid rows' thresholds ([T]): its request's key
    # blocks (int32), gamma (float32), minimum and maximum budget in blocks (int32)
    row_keys: torch.Tensor
    row_gamma: torch.Tensor
    row_low: torch.Tensor
    row_high: torch.Tensor
    key_blocks: torch.Tensor  # [R] int64: each request's key blocks
    # [2, R, W] float, for columns then offsets: +inf on block 0 (sink column,
    # diagonal offset) and, for a vsgrid request, on offsets below LOCAL_BLOCKS; -inf
    # past the keys
    forced: torch.Tensor
    # [2, R] int64: the columns and offsets a vsgrid request keeps (the forced ones)
    vsgrid_budgets: torch.Tensor
    tau: torch.Tensor  # [R] float32: the JS distance under which a head is QA
    low: torch.Tensor  # [R] minimum budget in blocks
    high: torch.Tensor  # [R] maximum budget in blocks
    # [R] float64: the most block pairs a request may select and run sparse
    max_selected: torch.Tensor
    densify: bool  # some request's max_density is not 1

    @classmethod
    def build(
        cls,
        plan: SparsePlan,
        num_q_heads: int,
        configs: tuple[FlexPrefillConfig, ...],
        hopper_kernel: bool,
    ) -> SearchLayout:
        """``configs``: one per request of the plan; ``hopper_kernel``: whether the
        Hopper attention kernel computes the batch (``max_density: auto``'s
        break-even depends on it)."""
        Hq, B, W, dev = (
            num_q_heads,
            plan.block_size,
            plan.max_k_blocks,
            plan.kv_len.device,
        )
        heads = torch.arange(Hq, device=dev)
        grid_start = aligned(2 * Hq * plan.total_kv_len)
        token_rows = (
            torch.arange(2, device=dev)[:, None, None] * Hq + heads
        ) * plan.total_kv_len
        token_rows = (token_rows + plan.kv_offset[:-1, None]).view(-1)
        token_lens = plan.kv_len.repeat_interleave(Hq).repeat(2)
        grid_rows = (
            grid_start
            + (heads * plan.num_q_blocks + plan.q_block_offset[:-1, None]).view(-1) * W
        )
        grid_lens = (
            (plan.q_block_offset[1:] - plan.q_block_offset[:-1]) * W
        ).repeat_interleave(Hq)
        blocks = torch.arange(W, device=dev)
        num_k_blocks = cdiv(plan.kv_len, B)
        valid = blocks < num_k_blocks[:, None]
        is_vsgrid = [c.selection != "paper" for c in configs]
        is_rerank = [c.selection == "rerank" for c in configs]
        is_head = [c.rerank_budget == "head" for c in configs]
        vsgrid, rerank, rerank_head = torch.tensor([is_vsgrid, is_rerank, is_head]).to(
            dev, non_blocking=True
        )
        local = torch.where(vsgrid, LOCAL_BLOCKS, 1)  # [R] offsets kept
        kept = torch.stack([(blocks == 0).expand_as(valid), blocks < local[:, None]])
        forced = torch.where(valid, torch.where(kept, float("inf"), 0.0), float("-inf"))
        # Per request, in one transfer: gamma, tau, the budget's bounds in blocks, the
        # most block pairs it may select.
        settings = torch.tensor(
            [
                [
                    c.gamma,
                    c.tau,
                    *c.budget_limits(cdiv(kv, B)),
                    c.max_selected(Hq, n, kv, hopper_kernel),
                ]  # fmt: skip
                for c, kv, n in zip(
                    configs, plan.kv_lens, plan.causal_pairs, strict=True
                )
            ],
            dtype=torch.float64,
        ).to(dev, non_blocking=True)
        gamma, tau, low, high, max_selected = settings.T
        low, high, gamma = low.int(), high.int(), gamma.float()
        return cls(
            grid_start=grid_start,
            size=grid_start + Hq * plan.num_q_blocks * W,
            row_start=torch.cat([token_rows, grid_rows]),
            row_len=torch.cat([token_lens, grid_lens]).int(),
            gamma=torch.cat(
                [gamma.repeat_interleave(Hq).repeat(2), gamma.repeat_interleave(Hq)]
            ),
            max_len=max(plan.max_kv_len, plan.max_q_blocks * W),
            vsgrid=vsgrid,
            rerank=rerank,
            rerank_head=rerank_head,
            any_paper=not all(is_vsgrid),
            any_vsgrid=any(is_vsgrid),
            any_rerank=any(is_rerank),
            row_vsgrid=vsgrid[plan.block_request],
            row_widen=torch.where(rerank, RERANK_WIDTH, 1)[plan.block_request].int(),
            row_keys=num_k_blocks[plan.block_request].int(),
            row_gamma=gamma[plan.block_request],
            row_low=low[plan.block_request].int(),
            row_high=high[plan.block_request].int(),
            key_blocks=num_k_blocks,
            forced=forced,
            vsgrid_budgets=torch.stack([torch.ones_like(local), local]),
            tau=tau.float(),
            low=low,
            high=high,
            max_selected=max_selected,
            densify=any(c.max_density != 1 for c in configs),
        )


def per_request(
    config: FlexPrefillConfig | Sequence[FlexPrefillConfig], plan: SparsePlan
) -> tuple[FlexPrefillConfig, ...]:
    """One config per request of the plan (the same one for all if one is given)."""
    if isinstance(config, FlexPrefillConfig):
        configs = (config,) * plan.num_requests
    elif isinstance(config, Sequence) and not isinstance(config, str):
        configs = tuple(config)
    else:
        configs = (config,)
    wrong = [type(c).__name__ for c in configs if not isinstance(c, FlexPrefillConfig)]
    if wrong:
        got = type(config).__name__
        raise ValueError(
            f"config: got {got if configs == (config,) else f'a {got} of {wrong[0]}'}; "
            "allowed: a FlexPrefillConfig, or a sequence of them, one a request"
        )
    if len(configs) != plan.num_requests:
        raise ValueError(
            f"config: {len(configs)} settings for {plan.num_requests} requests"
        )
    for c in configs:
        if c.block_size != plan.block_size:
            raise ValueError(
                f"config: block_size {c.block_size} in a plan of "
                f"{plan.block_size}-token blocks"
            )
    return configs


def find_blocks(
    q: torch.Tensor, kv: KVSource, plan: SparsePlan,
    config: FlexPrefillConfig | Sequence[FlexPrefillConfig],
    scale: float, dense: torch.Tensor, q_scale: torch.Tensor | None = None,
) -> SearchResult:  # fmt: skip
    """Select the blocks of every (request, query head) under ``config``, or under
    one config per request (their ``block_size`` the plan's). ``dense [R]`` bool:
    requests that take every causal block (their search results are ignored); so do
    requests whose selection exceeds their ``max_selected``. ``q_scale``: fp8
    queries' scale."""
    plan.check_batch(q, kv, dense=dense)
    R, Hq, D = plan.num_requests, q.shape[1], q.shape[2]
    B, W = plan.block_size, plan.max_k_blocks
    configs = per_request(config, plan)
    hopper_kernel = hopper_kernel_takes(q, kv, B)
    layout = plan.memo(
        (SearchLayout, Hq, configs, hopper_kernel),
        lambda: SearchLayout.build(plan, Hq, configs, hopper_kernel),
    )
    # Selection scores: the probe's per-key scores and the grid, in one buffer so
    # that one top-mass pass serves both. The probe adds into its part; the grid's
    # rows are read only where the grid kernel writes them whole.
    selection = torch.empty(layout.size, dtype=torch.float32, device=q.device)
    selection[: layout.grid_start].zero_()
    tokens = selection[: 2 * Hq * plan.total_kv_len].view(2, Hq, plan.total_kv_len)
    if layout.any_paper:
        scores = probe(q, kv, plan, scale, tokens=tokens, q_scale=q_scale)
        blocks, probe_mean = scores.blocks, scores.probe_mean
    else:
        blocks = torch.zeros(2, R, Hq, W, dtype=torch.float32, device=q.device)
    # Pattern test inputs: the pooled probe query and the probe's block masses (a
    # vsgrid request's: its last segment probe's).
    probe_masses = blocks[0]
    if layout.any_vsgrid:
        probes = plan.memo((SegmentProbes,), lambda: SegmentProbes.build(plan))
        masses = segment_block_masses(q, kv, plan, probes, scale, q_scale)
        last_mean = probes.last_probe_means(q, plan, q_scale)
        vsgrid = layout.vsgrid[:, None, None]
        probe_masses = torch.where(vsgrid, masses[probes.last_probe], probe_masses)
        if layout.any_paper:
            probe_mean = torch.where(vsgrid, last_mean, probe_mean)
        else:
            probe_mean = last_mean

    # Pattern: JS distance between the pooled estimate and the probe's block
    # distribution; the heads that select from the grid: query-aware ones, and every
    # head of a vsgrid request (request i's rows of head h: one contiguous run of
    # [Hq, T, W]).
    key_means = key_block_means(kv, plan, D)  # [R, Hkv, W, D]
    flags = head_patterns(
        probe_mean, key_means, probe_masses, layout.key_blocks, layout.tau, dense,
        layout.vsgrid, scale,
    )  # fmt: skip
    grid = query_aware_grid(
        query_block_means(q, plan, flags.from_grid, q_scale),
        key_means,
        flags.from_grid,
        plan,
        scale,
        grid=selection[layout.grid_start :].view(Hq, plan.num_q_blocks, W),
    )
    if layout.any_vsgrid:
        vsgrid_estimate_into(grid, masses, probes, plan, layout.vsgrid)

    # Top mass: vertical-slash budgets (the fewest tokens reaching gamma, as blocks,
    # clamped) and the query-aware heads' grid threshold; then, in a pass of its own
    # (its rows are short and many), each vsgrid row's. A query-aware head's token
    # rows are skipped (its budgets are the minimum).
    counts, thresholds = top_mass(
        selection,
        layout.row_start,
        layout.row_len,
        layout.max_len,
        layout.gamma,
        flags.top_mass_rows.view(-1),
    )
    # per grid row [Hq, T]: its request's head threshold, or its own (vsgrid)
    row_threshold = thresholds[2 * R * Hq : 3 * R * Hq].view(R, Hq)[plan.block_request]
    row_threshold = row_threshold.T
    if layout.any_vsgrid:
        vsgrid_heads = flags.from_grid.bool() & layout.vsgrid[:, None]
        thresholds = (
            grid,
            vsgrid_heads[plan.block_request].T,
            layout.row_keys,
            layout.row_gamma,
            layout.row_low,
            layout.row_high,
        )
        if layout.any_rerank:
            # the rerank rows' lists start as their candidates, cut below
            own, rerank_keep = candidate_thresholds(*thresholds, layout.row_widen)
        else:
            own = row_thresholds(*thresholds)
        row_threshold = torch.where(layout.row_vsgrid[None, :], own, row_threshold)

    # Vertical-slash: top columns (sink forced) and top offsets (diagonal forced, and
    # a vsgrid request's local window).
    columns, offsets = top_blocks(
        blocks, layout.forced, counts, layout.low, layout.high, flags.query_aware,
        layout.vsgrid, layout.vsgrid_budgets, B,
    )  # fmt: skip

    kv_index, kv_count = build_block_index(
        plan, columns, offsets, flags.from_grid, grid, row_threshold
    )
    if layout.any_rerank:
        # the grid is read no more: its rows hold the candidates' sampled masses
        sampled_block_masses(
            q, kv, plan, kv_index, kv_count, layout.rerank, scale, LOCAL_BLOCKS, grid,
            q_scale,
        )  # fmt: skip
        keep_reranked(
            plan, kv_index, kv_count, grid, rerank_keep, layout.rerank,
            layout.rerank_head, LOCAL_BLOCKS,
        )  # fmt: skip
    if layout.densify:
        # Requests whose heads together select more than max_density of their causal
        # blocks attend every causal block (config.max_selected).
        selected = torch.zeros(R, dtype=torch.float64, device=q.device).index_add_(
            0, plan.block_request, kv_count.sum(0, dtype=torch.float64)
        )
        dense = dense | (selected > layout.max_selected)
    take_every_block(plan, kv_index, kv_count, dense)
    pattern = torch.where(
        dense[:, None],
        Pattern.DENSE,
        torch.where(
            flags.query_aware.bool(), Pattern.QUERY_AWARE, Pattern.VERTICAL_SLASH
        ),
    )
    return SearchResult(kv_index, kv_count, pattern.to(torch.int8))
