"""The PyTorch reference: planted structure is found, and the attention is exact."""

import math

import pytest
import torch
from helpers import dense_attention, rel_error

from vllm_flexprefill import FlexPrefillConfig, Pattern, flex_prefill_attention
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.reference import (
    block_sparse_attention,
    budget_blocks,
    expand_kv_heads,
    flex_prefill_reference,
    forced_blocks,
    js_distance,
    pooled_weights,
    query_aware_grid,
    sampled_block_masses,
    segment_block_masses,
    top_mass,
    vsgrid_estimate,
    vsgrid_search,
)
from vllm_flexprefill.selection import MIN_POOLED_WEIGHT
from vllm_flexprefill.synthetic import planted_qkv


def random_qkv(q_len, kv_len, hq, hkv, d, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(q_len, hq, d, generator=gen, dtype=dtype)
    k = torch.randn(kv_len, hkv, d, generator=gen, dtype=dtype)
    v = torch.randn(kv_len, hkv, d, generator=gen, dtype=dtype)
    return q, k, v


def eight_block_floor(block: int) -> FlexPrefillConfig:
    """The paper's settings with a floor of 8 blocks (its 1024 tokens at block 128),
    sparse at every length and density."""
    return FlexPrefillConfig(
        gamma=0.9,
        tau=0.1,
        block_size=block,
        min_budget=8 * block,
        dense_threshold=0,
        max_density=1.0,
    )


PLANTED_CASES = [
    # seq_len, block, Hq, Hkv, query_aware_every, seed
    (2048, 64, 8, 2, 4, 1),
    (1900, 128, 6, 3, 3, 2),
    (2500, 64, 4, 4, 2, 3),
]


@pytest.mark.parametrize("n, block, hq, hkv, qa_every, seed", PLANTED_CASES)
def test_planted_structure_is_found(n, block, hq, hkv, qa_every, seed):
    # No locality bias here (see the next test): its local window would compete with the
    # planted stripes for the budget floor at these short lengths.
    q, k, v, planted = planted_qkv(
        n, hq, hkv, 64, block, query_aware_every=qa_every, locality=0.0, seed=seed
    )
    # A floor of 8 blocks (the paper's 1024 tokens at block 128):
    # token counts // block + 1 alone cannot cover scattered stripes, and the sink and
    # each stripe also claim one or two slash offsets; the paper leaves both to the
    # minimum budget too.
    config = eight_block_floor(block)
    scale = 64**-0.5
    _, _, stats = flex_prefill_reference(q, k, v, config, scale)
    assert stats.pattern == planted.kinds()

    geo = ChunkGeometry(n, n, block)
    mask = stats.block_mask
    group = hq // hkv
    for h, head in enumerate(planted.heads):
        if head.kind == Pattern.QUERY_AWARE:
            seek = planted.query_block_cluster[h // group]
            same = (
                seek[:, None] == planted.block_cluster[h // group][None, :]
            ) & geo.causal_block_mask()
            assert mask[h][same].float().mean() >= 0.8, (
                f"head {h}: clustered blocks missed"
            )
            continue
        for x in planted.stripes[h // group]:
            assert mask[h, x // block :, x // block].all(), (
                f"head {h}: stripe at token {x} missed"
            )
        for distance in head.slash_distances:
            s = distance // block
            rows = torch.arange(s, geo.num_k_blocks)
            assert mask[h, rows, rows - s].all(), (
                f"head {h}: slash at distance {distance} missed"
            )

    assert_probe_mass_kept(q, k, mask, planted, config, scale)


@pytest.mark.parametrize("n, block, seed", [(3000, 64, 4), (2600, 128, 5)])
def test_the_local_window_is_found(n, block, seed):
    """With the locality bias on, attention decays with distance like a power law: the
    nearest diagonals are selected on every row. (No mass assertion: on such heavy tails
    the paper's token-count budgets, ``tokens // B + 1`` blocks, keep about 0.75-0.94 of
    the probe mass at gamma 0.9, by design of the method.)"""
    q, k, v, planted = planted_qkv(n, 8, 2, 64, block, query_aware_every=0, seed=seed)
    config = eight_block_floor(block)
    _, _, stats = flex_prefill_reference(q, k, v, config, 64**-0.5)
    rows = torch.arange(1, -(-n // block))
    assert (
        stats.block_mask[:, rows, rows].all()
        and stats.block_mask[:, rows, rows - 1].all()
    )
    assert stats.pattern == planted.kinds()


def assert_probe_mass_kept(q, k, mask, planted, config, scale):
    """The selected blocks hold >= gamma - 0.05 of the probe rows' attention mass on
    vertical-slash heads (the probe: the last block of queries)."""
    n, hq, block = q.shape[0], q.shape[1], config.block_size
    logits = (
        torch.einsum(
            "nhd,khd->hnk", q[-block:].double(), expand_kv_heads(k, hq).double()
        )
        * scale
    )
    pos = torch.arange(n - block, n)
    visible = torch.arange(n)[None, :] <= pos[:, None]
    p = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    selected = mask[:, pos // block][
        :, :, torch.arange(n) // block
    ]  # [H, probe rows, keys]
    kept = (p * selected).sum(-1).mean(-1)
    for h, head in enumerate(planted.heads):
        if head.kind == Pattern.VERTICAL_SLASH:
            assert kept[h] >= config.gamma - 0.05, (
                f"head {h} keeps only {kept[h]:.3f} of the probe mass"
            )


@pytest.mark.parametrize(
    "q_len, kv_len, hq, hkv, d, block",
    [
        (200, 200, 4, 2, 32, 64),
        (1, 77, 6, 3, 16, 64),
        (130, 451, 8, 2, 64, 128),
        (333, 333, 3, 1, 48, 64),
    ],
)
def test_all_blocks_selected_equals_dense_causal_attention(
    q_len, kv_len, hq, hkv, d, block
):
    q, k, v = random_qkv(q_len, kv_len, hq, hkv, d, seed=q_len + kv_len)
    geo = ChunkGeometry(q_len, kv_len, block)
    mask = geo.causal_block_mask().expand(hq, -1, -1)
    scale = 0.7 / math.sqrt(d)
    out, lse = block_sparse_attention(q, k, v, mask, geo, scale)
    assert rel_error(out, dense_attention(q, k, v, scale)) < 1e-5
    # lse matches the dense log-sum-exp of every row
    keys = expand_kv_heads(k, hq).double()
    logits = torch.einsum("qhd,khd->qhk", q.double(), keys) * scale
    visible = (
        torch.arange(kv_len)[None, :] <= torch.arange(q_len)[:, None] + kv_len - q_len
    )
    expected = torch.logsumexp(
        logits.masked_fill(~visible[:, None, :], float("-inf")), dim=-1
    )
    assert rel_error(lse, expected) < 1e-6


def test_a_budget_covering_everything_reproduces_dense_attention():
    q, k, v = random_qkv(300, 700, 4, 2, 32, seed=5)
    config = FlexPrefillConfig(
        block_size=64, min_budget=700, dense_threshold=0, tau=0.0, max_density=1.0
    )
    out, _, stats = flex_prefill_reference(q, k, v, config, 32**-0.5)
    assert stats.density.eq(1).all()
    assert rel_error(out, dense_attention(q, k, v, 32**-0.5)) < 1e-5


@pytest.mark.parametrize("context", [700, 640, 1])
def test_a_chunk_with_cached_context_selects_as_the_whole_prompt_does(context):
    """The chunk's probe is the prompt's last block, so with no query-aware heads the
    chunk selects the whole prompt's blocks on its own rows and
    reproduces its outputs."""
    n, block = 1000, 64
    q, k, v, _ = planted_qkv(n, 4, 2, 64, block, query_aware_every=0, seed=7)
    config = FlexPrefillConfig(
        block_size=block, min_budget=block, dense_threshold=0, tau=0.0, max_density=1.0
    )
    scale = 64**-0.5
    full_out, full_lse, full = flex_prefill_reference(q, k, v, config, scale)
    out, lse, chunk = flex_prefill_reference(q[context:], k, v, config, scale)
    first = context // block
    assert torch.equal(chunk.block_mask, full.block_mask[:, first:])
    assert rel_error(out, full_out[context:]) < 1e-6
    assert rel_error(lse, full_lse[context:]) < 1e-6
    # and the chunk's rows really attend to the context keys (the sink, the stripes)
    assert chunk.block_mask[:, :, 0].all()


def test_the_probe_is_the_chunks_own_last_block():
    """Queries before the probe do not influence the selection; the last block's do."""
    n, block = 1024, 64
    q, k, v = random_qkv(n, n, 2, 1, 32, seed=11)
    config = FlexPrefillConfig(
        block_size=block, min_budget=block, dense_threshold=0, tau=0.0, max_density=1.0
    )
    _, _, base = flex_prefill_reference(q, k, v, config, 32**-0.5)
    changed = q.clone()
    changed[: n - block] = torch.randn(n - block, 2, 32)
    _, _, same = flex_prefill_reference(changed, k, v, config, 32**-0.5)
    assert torch.equal(base.block_mask, same.block_mask)
    k_star = k.clone()
    # a key the last block attends to strongly
    k_star[500] = 10 * q[-block:].mean((0, 1))
    _, _, moved = flex_prefill_reference(q, k_star, v, config, 32**-0.5)
    assert moved.block_mask[:, -1, 500 // block].all()


def test_budgets_honour_min_and_max():
    assert budget_blocks(
        torch.tensor([0, 63, 64, 640, 10_000]),
        FlexPrefillConfig(block_size=64, min_budget=128, max_budget=512),
        num_k_blocks=100,
    ).tolist() == [2, 2, 2, 8, 8]
    assert budget_blocks(
        torch.tensor([5000]),
        FlexPrefillConfig(block_size=64, min_budget=64),
        num_k_blocks=20,
    ).tolist() == [20]
    q, k, v = random_qkv(2048, 2048, 4, 2, 32, seed=3)
    scale = 32**-0.5
    capped = FlexPrefillConfig(
        block_size=64,
        min_budget=64,
        max_budget=128,
        gamma=0.99,
        tau=0.0,
        dense_threshold=0,
        max_density=1.0,
    )
    _, _, stats = flex_prefill_reference(q, k, v, capped, scale)
    # near-uniform attention wants everything; the last row holds
    # <= 2 columns + 2 diagonals
    assert stats.block_mask[:, -1].sum(-1).le(4).all()
    floored = FlexPrefillConfig(
        block_size=64,
        min_budget=6 * 64,
        gamma=0.01,
        tau=0.0,
        dense_threshold=0,
        max_density=1.0,
    )
    _, _, stats = flex_prefill_reference(q, k, v, floored, scale)
    assert stats.block_mask[:, -1].sum(-1).ge(6).all()


def test_short_sequences_take_dense_attention():
    q, k, v = random_qkv(500, 900, 4, 2, 32, seed=4)
    config = FlexPrefillConfig(
        block_size=64, min_budget=64, dense_threshold=901, max_density=1.0
    )
    out, _, stats = flex_prefill_reference(q, k, v, config, 32**-0.5)
    assert stats.pattern == [Pattern.DENSE.label] * 4 and stats.density.eq(1).all()
    assert rel_error(out, dense_attention(q, k, v, 32**-0.5)) < 1e-5
    _, _, sparse = flex_prefill_reference(
        q, k, v, config.model_copy(update={"dense_threshold": 900}), 32**-0.5
    )
    assert Pattern.DENSE.label not in sparse.pattern and sparse.density.lt(1).all()


def selected_fraction(stats, geo) -> tuple[int, int]:
    """``(selected, causal)`` block pairs of a request, all heads together."""
    heads = stats.block_mask.shape[0]
    return int(stats.block_mask.sum()), heads * geo.num_causal_pairs


def test_a_selection_denser_than_max_density_runs_dense_causal_attention():
    """A chunk after cached context (GQA) whose heads together select more than
    max_density of their causal blocks attends every causal block, every head DENSE;
    at max_density exactly its selected fraction it stays sparse (the rule is
    "more than")."""
    q_len, kv_len, hq, hkv, d = 300, 700, 4, 2, 32
    q, k, v = random_qkv(q_len, kv_len, hq, hkv, d, seed=5)
    geo = ChunkGeometry(q_len, kv_len, 64)
    scale = d**-0.5
    config = FlexPrefillConfig(
        block_size=64, min_budget=64, dense_threshold=0, max_density=1.0
    )
    sparse_out, _, sparse = flex_prefill_reference(q, k, v, config, scale)
    selected, causal = selected_fraction(sparse, geo)
    assert Pattern.DENSE.label not in sparse.pattern and 0 < selected < causal
    fraction = selected / causal
    at = config.with_overrides({"max_density": fraction})
    # the boundary is exact here: max_density * Hq * causal pairs == selected
    assert at.max_selected(hq, geo.num_causal_pairs, geo.kv_len, False) == selected

    out, _, stats = flex_prefill_reference(q, k, v, at, scale)
    assert stats.pattern == sparse.pattern
    assert torch.equal(stats.block_mask, sparse.block_mask)
    assert torch.equal(out, sparse_out)

    half_a_block_below = (selected - 0.5) / causal
    for max_density in (half_a_block_below, fraction / 2):
        below = config.with_overrides({"max_density": max_density})
        out, _, stats = flex_prefill_reference(q, k, v, below, scale)
        assert stats.pattern == [Pattern.DENSE.label] * hq
        assert torch.equal(stats.block_mask, geo.causal_block_mask().expand(hq, -1, -1))
        assert stats.density.eq(1).all()
        assert rel_error(out, dense_attention(q, k, v, scale)) < 1e-5
        assert rel_error(sparse_out, dense_attention(q, k, v, scale)) > 1e-3


def test_max_density_decides_per_request_in_a_batch():
    """In a batch through the API, only the requests denser than max_density run
    dense; the others keep the selection they make with max_density 1."""
    shapes = [(700, 700), (250, 1300), (130, 451)]
    parts = [random_qkv(ql, kl, 4, 2, 32, seed=i) for i, (ql, kl) in enumerate(shapes)]
    q, k, v = (torch.cat([p[j] for p in parts]) for j in range(3))
    cu_q = torch.tensor([0, 700, 950, 1080])
    cu_k = torch.tensor([0, 700, 2000, 2451])
    settings = dict(block_size=64, min_budget=64, dense_threshold=0, gamma=0.7)
    _, free = flex_prefill_attention(
        q, k, v, cu_q, cu_k, config=settings | {"max_density": 1.0}, return_stats=True
    )
    fractions = [
        selected / causal
        for selected, causal in (
            selected_fraction(s, ChunkGeometry(ql, kl, 64))
            for s, (ql, kl) in zip(free, shapes, strict=True)
        )
    ]
    limit = sorted(fractions)[1]  # between the sparsest and the densest
    assert min(fractions) < limit < max(fractions)
    out, capped = flex_prefill_attention(
        q, k, v, cu_q, cu_k, config=settings | {"max_density": limit}, return_stats=True
    )
    for i in range(len(shapes)):
        rows, keys = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        if fractions[i] > limit:
            assert capped[i].pattern == [Pattern.DENSE.label] * 4
            assert capped[i].density.eq(1).all()
            want = dense_attention(q[rows], k[keys], v[keys], 32**-0.5)
            assert rel_error(out[rows], want) < 1e-5
        else:
            assert capped[i].pattern == free[i].pattern
            assert Pattern.DENSE.label not in capped[i].pattern
            assert torch.equal(capped[i].block_mask, free[i].block_mask)


def test_a_varlen_batch_equals_single_calls():
    config = FlexPrefillConfig(
        block_size=64, min_budget=64, dense_threshold=600, max_density=1.0
    )
    shapes = [(700, 700), (250, 1300), (90, 400)]  # the last runs dense
    parts = [random_qkv(ql, kl, 6, 2, 32, seed=i) for i, (ql, kl) in enumerate(shapes)]
    q = torch.cat([p[0] for p in parts])
    k = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts])
    cu_q = torch.tensor([0, 700, 950, 1040])
    cu_k = torch.tensor([0, 700, 2000, 2400])
    out, stats = flex_prefill_attention(
        q, k, v, cu_q, cu_k, config=config, return_stats=True
    )
    assert out.shape == q.shape and out.dtype == q.dtype
    for i, (qi, ki, vi) in enumerate(parts):
        single, single_stats = flex_prefill_attention(
            qi,
            ki,
            vi,
            torch.tensor([0, len(qi)]),
            torch.tensor([0, len(ki)]),
            config=config,
            return_stats=True,
        )
        assert torch.equal(out[cu_q[i] : cu_q[i + 1]], single)
        assert torch.equal(stats[i].block_mask, single_stats[0].block_mask)
        assert stats[i].pattern == single_stats[0].pattern
    assert stats[2].pattern == [Pattern.DENSE.label] * 6 and stats[
        1
    ].block_mask.shape == (6, 5, 21)


def test_top_mass_counts_the_fewest_entries_reaching_the_fraction():
    scores = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    count, threshold = top_mass(scores, 0.8)
    assert count.tolist() == [2, 4] and threshold.tolist() == pytest.approx([0.3, 0.25])
    count, _ = top_mass(scores, 0.81)
    assert count.tolist() == [3, 4]


def test_js_distance_is_a_bounded_symmetric_distance_without_nan():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    d = js_distance(p, q)
    assert torch.allclose(d, torch.tensor([math.sqrt(math.log(2)), 0.0]))
    assert torch.equal(js_distance(q, p), d)


@pytest.mark.parametrize(
    "q_len, kv_len, block",
    [(1000, 1000, 64), (300, 700, 64), (1, 77, 128), (128, 4096, 128)],
)
def test_causal_pair_count_matches_the_causal_mask(q_len, kv_len, block):
    geo = ChunkGeometry(q_len, kv_len, block)
    assert geo.num_causal_pairs == geo.causal_block_mask().sum().item()


def vsgrid(**settings) -> FlexPrefillConfig:
    """vsgrid selection, sparse at every length and density."""
    return FlexPrefillConfig(
        selection="vsgrid", dense_threshold=0, max_density=1.0, **settings
    )


@pytest.mark.parametrize("q_len, kv_len", [(2000, 2000), (777, 1500)])
def test_vsgrid_rows_keep_their_estimated_mass_within_their_budgets(q_len, kv_len):
    """Each query block keeps the fewest key blocks reaching gamma of its estimate (ties
    kept), clamped to [ceil(min_budget / B), ceil(max_budget / B)], plus the sink and
    the two nearest blocks; the chunk's segments each read their own probe."""
    q, k, _ = random_qkv(q_len, kv_len, 4, 2, 32, seed=q_len)
    geo = ChunkGeometry(q_len, kv_len, 64)
    scale = 32**-0.5
    estimate = vsgrid_estimate(segment_block_masses(q, k, geo, scale), q, k, geo, scale)
    causal = geo.causal_block_mask()
    assert torch.allclose(estimate.sum(-1), torch.ones(estimate.shape[:2]).double())
    assert estimate.masked_select(~causal).eq(0).all()
    for low, high, gamma in [(1, None, 0.9), (4, 6, 0.9), (3, None, 0.2)]:
        config = vsgrid(
            block_size=64,
            gamma=gamma,
            min_budget=64 * low,
            max_budget=None if high is None else 64 * high,
        )
        mask, patterns = vsgrid_search(q, k, geo, config, scale)
        assert len(patterns) == 4 and mask[..., 0].all()
        rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
        chunk_rows = torch.arange(geo.num_q_blocks)
        assert mask[:, chunk_rows, rows].all()  # the diagonal
        assert mask[:, chunk_rows[rows > 0], rows[rows > 0] - 1].all()  # and before
        assert not (mask & ~causal).any()
        picked = estimate.masked_fill(~mask, 0)
        # every row reaches gamma of its mass, or its cap; no row falls below its
        # floor (where it has that many blocks)
        kept = mask.sum(-1)
        visible = causal.sum(-1)
        reached = picked.sum(-1) >= gamma * estimate.sum(-1) - 1e-9
        assert (reached | (kept >= (high or geo.num_k_blocks + 1))).all()
        assert (kept >= torch.minimum(visible, torch.tensor(low))).all()
        if high is not None:  # the sink, the two nearest and at most `high` others
            assert kept.le(high + 3).all()


@pytest.mark.parametrize("q_len, kv_len", [(700, 700), (333, 1291)])
def test_rerank_rows_keep_their_count_of_what_the_sampled_queries_attend(q_len, kv_len):
    """The sampled queries' masses are relative to their attention on the forced
    blocks (those sum to 1 over any candidates); a rerank row keeps at most vsgrid's
    count besides the forced blocks, all among the estimate's top twice the count, and
    the ones it keeps carry more sampled mass than the candidates it drops."""
    q, k, _ = random_qkv(q_len, kv_len, 4, 2, 32, seed=kv_len)
    q[:, :2] *= 4  # sharper rows for two heads
    geo = ChunkGeometry(q_len, kv_len, 64)
    scale = 32**-0.5
    causal = geo.causal_block_mask()
    forced = forced_blocks(geo)
    gen = torch.Generator().manual_seed(kv_len)
    some = causal & (torch.rand(4, *causal.shape, generator=gen) < 0.5) | forced
    for candidates in (causal.expand(4, -1, -1), some):
        masses = sampled_block_masses(q, k, geo, scale, candidates)
        on_forced = (masses * forced).sum(-1)
        assert torch.allclose(on_forced, torch.ones(4, geo.num_q_blocks).double())
        assert masses.masked_select(~candidates).eq(0).all()

    config = vsgrid(block_size=64, gamma=0.8, min_budget=64)
    plain, _ = vsgrid_search(q, k, geo, config, scale)
    rerank = config.with_overrides({"selection": "rerank"})
    ranked, _ = vsgrid_search(q, k, geo, rerank, scale)
    assert (ranked != plain).any()
    estimate = vsgrid_estimate(segment_block_masses(q, k, geo, scale), q, k, geo, scale)
    _, threshold = top_mass(estimate, 0.8)
    count = (estimate >= threshold[..., None]).sum(-1)
    assert (ranked & forced).eq(forced).all()
    assert ((ranked & ~forced).sum(-1) <= count).all()
    wide = (2 * count).clamp(max=geo.num_k_blocks)
    widest = estimate.sort(-1, descending=True).values.gather(-1, (wide - 1)[..., None])
    candidates = causal & ((estimate >= widest) | forced)
    assert not (ranked & ~candidates).any()
    masses = sampled_block_masses(q, k, geo, scale, candidates)
    dropped = masses.masked_fill(~candidates | ranked, 0).amax(-1)
    kept_least = masses.masked_fill(~ranked | forced, float("inf")).amin(-1)
    assert (dropped <= kept_least).all()


def test_vsgrid_probes_sit_in_each_segments_last_block():
    geo = ChunkGeometry(650, 1283, 64)  # partial first block: context 633
    segments = geo.segments(8)
    assert segments[0][0] == 0 and segments[-1][1] == geo.num_q_blocks - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(segments, segments[1:], strict=False))
    for _, last in segments:
        end, stride, count = geo.segment_probe(last, 32)
        first_position = end - stride * (count - 1)
        block = geo.first_q_block + last
        assert first_position // 64 == end // 64 == block
        assert first_position >= geo.context_len and end < geo.kv_len
        assert count == min(32, end + 1 - max(block * 64, geo.context_len))


@pytest.mark.parametrize(
    "q_len, kv_len, qa_every", [(2000, 2000, 3), (1100, 2600, 4), (2400, 2400, 2)]
)
def test_vsgrid_weights_the_grid_by_what_predicts_the_held_out_probe_rows(
    q_len, kv_len, qa_every
):
    """Planted heads: a content (query-aware) head's blocks move from query block to
    query block, so the grid predicts the held-out probe rows and gets weight 1; a
    vertical-slash head's hold everywhere, so the probes' read does and the grid keeps
    little (at most 0.5; the least, 1/3, at long lengths). A chunk of one query block
    has nothing to hold out."""
    q, k, _, planted = planted_qkv(
        kv_len, 8, 2, 64, 64, query_aware_every=qa_every, seed=q_len
    )
    q = q[-q_len:]
    geo = ChunkGeometry(q_len, kv_len, 64)
    scale = 64**-0.5
    grid = query_aware_grid(q, k, geo, scale)
    weights = pooled_weights(segment_block_masses(q, k, geo, scale), grid, geo)
    content = torch.tensor([kind == "query_aware" for kind in planted.kinds()])
    assert weights[content].eq(1).all(), weights
    assert weights[~content].le(0.5).all(), weights
    tail = 1 + (kv_len - 1) % 64  # the queries of the last block
    short = ChunkGeometry(tail, kv_len, 64)
    one_segment = segment_block_masses(q[-tail:], k, short, scale)
    assert len(one_segment) == 1
    grid = query_aware_grid(q[-tail:], k, short, scale)
    weights = pooled_weights(one_segment, grid, short)
    assert weights.eq(MIN_POOLED_WEIGHT).all()
