"""Every Triton kernel against its PyTorch twin, on small shapes, through the Triton
interpreter on the CPU (on a GPU the same tests run natively).

float32 and float16 only: the interpreter's bf16 ``tl.dot`` is broken (Triton 3.6); bf16
runs in the GPU tests. Outputs are poisoned with NaN first, so unwritten rows show.
"""

import itertools
from dataclasses import replace

import pytest
import torch
from helpers import dense_attention, plan_for, rel_error, varlen_batch
from kernel_twins import (
    block_masks_twin,
    block_means_twin,
    block_sparse_attention_twin,
    probe_twin,
    query_aware_grid_twin,
    requests,
    segment_masses_twin,
    top_mass_twin,
)

from vllm_flexprefill import (
    FlexPrefillConfig,
    Pattern,
    flex_prefill_attention,
    reference,
)
from vllm_flexprefill.blocks import ChunkGeometry, cdiv
from vllm_flexprefill.break_even import break_even_density
from vllm_flexprefill.kernels import (
    KVSource,
    find_blocks,
    flex_prefill_forward,
    hopper_common,
    index_to_masks,
    sparse_attention,
    warm_up,
)
from vllm_flexprefill.kernels.block_index import build_block_index, take_every_block
from vllm_flexprefill.kernels.pattern import head_patterns
from vllm_flexprefill.kernels.pooling import key_block_means, query_block_means
from vllm_flexprefill.kernels.probe import SPLIT_TOKENS, ProbeLaunch, probe
from vllm_flexprefill.kernels.query_aware import query_aware_grid
from vllm_flexprefill.kernels.rerank import keep_reranked, sampled_block_masses
from vllm_flexprefill.kernels.segment_probe import SegmentProbes, segment_block_masses
from vllm_flexprefill.kernels.sparse_attention import (
    AttentionLaunch,
    block_sparse_attention,
    hopper_kernel_runs,
    hopper_kernel_takes,
)
from vllm_flexprefill.kernels.top_mass import GATHER, TopMassLaunch, top_mass
from vllm_flexprefill.kernels.vertical_slash import top_blocks
from vllm_flexprefill.kernels.vsgrid import (
    candidate_thresholds,
    pooled_weights,
    row_thresholds,
)
from vllm_flexprefill.reference import (
    flex_prefill_reference,
    js_distance,
    vsgrid_search,
)
from vllm_flexprefill.reference import top_blocks as top_blocks_reference
from vllm_flexprefill.selection import (
    LOCAL_BLOCKS,
    MIN_POOLED_WEIGHT,
    POOLED_WEIGHTS,
    SEGMENTS,
)
from vllm_flexprefill.synthetic import (
    fp8_dequantised,
    fp8_quantised,
    paged_copy,
    planted_qkv,
)

# every buffer the kernels allocate starts poisoned (conftest.poisoned_scratch)
pytestmark = pytest.mark.usefixtures("poisoned_scratch")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# A fresh prompt, a chunk after unaligned cached context, and a one-token chunk.
Q_LENS, KV_LENS = (200, 70, 1), (200, 333, 65)


def key_source(k, v, page_size, kv_lens=KV_LENS, scales=(None, None)):
    """Contiguous (``page_size`` None) or paged K/V of a batch, with fp8 ones'
    ``(key_scale, value_scale)``."""
    if page_size is None:
        return KVSource(k, v, None, *scales)
    return paged_copy(k, v, kv_lens, page_size, 0, *scales)


def random_selection(plan, hq, seed):
    gen = torch.Generator().manual_seed(seed)
    R, W = plan.num_requests, plan.max_k_blocks
    columns = torch.rand(R, hq, W, generator=gen) < 0.3
    offsets = torch.rand(R, hq, W, generator=gen) < 0.3
    offsets[..., 0] = True  # the diagonal
    from_grid = torch.rand(R, hq, generator=gen) < 0.5
    grid = torch.rand(hq, plan.num_q_blocks, W, generator=gen)
    threshold = torch.rand(hq, plan.num_q_blocks, generator=gen)  # per row
    dense = torch.tensor([False, True, False])
    return [t.to(DEVICE) for t in (columns, offsets, from_grid, grid, threshold, dense)]


def block_lists(plan, columns, offsets, from_grid, grid, threshold, dense):
    """The lists of a selection as ``find_blocks`` makes them: ``build_block_index``,
    then the ``dense`` requests' rows rewritten with every causal block."""
    kv_index, kv_count = build_block_index(
        plan, columns, offsets, from_grid, grid, threshold
    )
    take_every_block(plan, kv_index, kv_count, dense)
    return kv_index, kv_count


def test_block_lists_match_the_reference_masks():
    plan = plan_for(Q_LENS, KV_LENS, 64, DEVICE)
    selection = random_selection(plan, 4, seed=1)
    kv_index, kv_count = block_lists(plan, *selection)
    expected = block_masks_twin(plan, *selection)
    for got, want in zip(
        index_to_masks(plan, kv_index, kv_count), expected, strict=True
    ):
        assert torch.equal(got.cpu(), want.cpu())
    # the dense requests' lists are rewritten (the search's max_density step), the
    # others' kept as build_block_index made them
    *chosen, dense = selection
    built = index_to_masks(plan, *build_block_index(plan, *chosen))
    final = index_to_masks(plan, kv_index, kv_count)
    for is_dense, got, want in zip(dense.tolist(), final, built, strict=True):
        assert is_dense or torch.equal(got.cpu(), want.cpu())
    # sorted, diagonal last
    for h in range(4):
        for g in range(plan.num_q_blocks):
            row = kv_index[h, g, : kv_count[h, g]].tolist()
            assert row == sorted(row) and row[-1] == plan.block_row[g].item()


@pytest.mark.parametrize("page_size", [None, 16, 128])
@pytest.mark.parametrize(
    "dtype, d, block",
    [
        (torch.float32, 48, 64),
        (torch.float16, 64, 64),
        (torch.float16, 32, 128),
        (torch.float16, 256, 128),  # 64-key tiles (AttentionLaunch.default)
    ],
)
def test_block_sparse_attention_matches_reference(page_size, dtype, d, block):
    hq, hkv = 6, 2
    q, k, v = varlen_batch(Q_LENS, KV_LENS, hq, hkv, d, dtype, DEVICE, seed=block + d)
    # Leave gaps between the requests' rows: they must stay untouched.
    q_starts = [0, 230, 320]
    q_full = torch.randn(330, hq, d, dtype=dtype, device=DEVICE)
    for start, n, rows in zip(q_starts, Q_LENS, q.split(list(Q_LENS)), strict=True):
        q_full[start : start + n] = rows
    plan = plan_for(Q_LENS, KV_LENS, block, DEVICE, q_starts=q_starts)
    kv_index, kv_count = block_lists(plan, *random_selection(plan, hq, seed=2))
    kv = key_source(k, v, page_size)
    out = torch.full_like(q_full, float("nan"))
    lse = torch.full(q_full.shape[:2], float("nan"), device=DEVICE)
    block_sparse_attention(q_full, kv, plan, kv_index, kv_count, 0.2, out, lse)
    want_out, want_lse = block_sparse_attention_twin(
        q_full, kv, plan, kv_index, kv_count, 0.2
    )
    rows = torch.cat(
        [torch.arange(s, s + n) for s, n in zip(q_starts, Q_LENS, strict=True)]
    )
    gaps = torch.ones(330, dtype=torch.bool)
    gaps[rows] = False
    assert not out[rows].isnan().any() and out[gaps].isnan().all()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    assert rel_error(out[rows], want_out[rows]) < tolerance
    assert rel_error(lse[rows], want_lse[rows]) < tolerance


@pytest.mark.parametrize("page_size", [None, 16, 128])
@pytest.mark.parametrize(
    "block, launch, d, scale, seed",
    [
        (64, ProbeLaunch(), 32, 0.25, 64),
        (128, ProbeLaunch(), 32, 0.25, 128),
        (64, ProbeLaunch(2, 16, 4), 32, 0.25, 64),
        (128, ProbeLaunch(4, 32, 4, max_registers=128), 32, 0.25, 128),
        (128, ProbeLaunch(), 256, 256**-0.5, 7),  # the LSE pass's two stages
    ],
)
def test_probe_matches_reference(page_size, block, launch, d, scale, seed):
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, d, device=DEVICE, seed=seed)
    plan = plan_for(Q_LENS, KV_LENS, block, DEVICE)
    kv = key_source(k, v, page_size)
    got, want = probe(q, kv, plan, scale, launch), probe_twin(q, kv, plan, scale)
    for name in ("tokens", "vertical_blocks", "slash_blocks", "probe_mean"):
        assert rel_error(getattr(got, name), getattr(want, name)) < 1e-5, name


def test_probe_combines_each_requests_own_splits_of_keys():
    """A prompt whose keys span two splits of the log-sum-exp pass beside one of a
    single split: each request's rows combine the splits holding its keys."""
    q_lens, kv_lens = (200, 50), (SPLIT_TOKENS + 809, 50)
    q, k, v = varlen_batch(q_lens, kv_lens, 2, 1, 16, device=DEVICE, seed=1)
    plan = plan_for(q_lens, kv_lens, 64, DEVICE)
    kv = key_source(k, v, 16, kv_lens)
    got, want = probe(q, kv, plan, 0.25), probe_twin(q, kv, plan, 0.25)
    for name in ("tokens", "vertical_blocks", "slash_blocks", "probe_mean"):
        assert rel_error(getattr(got, name), getattr(want, name)) < 1e-5, name


@pytest.mark.parametrize(
    "page_size, block, d, heads, q_lens, kv_lens",
    [
        (None, 64, 32, (4, 2), Q_LENS, KV_LENS),  # two query heads a program
        (16, 64, 64, (3, 1), Q_LENS, KV_LENS),  # one
        # partial first and last blocks; four query heads a program, two programs
        (128, 128, 32, (8, 2), (900, 257), (900, 1300)),
    ],
)
def test_segment_probe_masses_match_reference(
    page_size, block, d, heads, q_lens, kv_lens
):
    q, k, v = varlen_batch(q_lens, kv_lens, *heads, d, device=DEVICE, seed=block + d)
    plan = plan_for(q_lens, kv_lens, block, DEVICE)
    kv = key_source(k, v, page_size, kv_lens)
    probes = SegmentProbes.build(plan)
    got = segment_block_masses(q, kv, plan, probes, 0.3)
    assert rel_error(got, segment_masses_twin(q, kv, plan, 0.3)) < 1e-5
    # each global query block reads its own segment's probe (probes numbered by
    # request, then segment)
    segments = [
        (first, last)
        for q_len, kv_len in zip(q_lens, kv_lens, strict=True)
        for first, last in ChunkGeometry(q_len, kv_len, block).segments(SEGMENTS)
    ]
    expected = [
        p for p, (first, last) in enumerate(segments) for _ in range(first, last + 1)
    ]
    assert len(expected) == plan.num_q_blocks
    assert probes.row_probe.tolist() == expected


@pytest.mark.parametrize("page_size", [None, 128])
def test_block_means_match_reference(page_size):
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 48, device=DEVICE, seed=3)
    plan = plan_for(Q_LENS, KV_LENS, 64, DEVICE)
    kv = key_source(k, v, page_size)
    want_keys, want_queries = block_means_twin(q, kv, plan)
    got_keys = key_block_means(kv, plan, 48)
    for i, kv_len in enumerate(KV_LENS):
        blocks = cdiv(kv_len, 64)
        assert rel_error(got_keys[i, :, :blocks], want_keys[i, :, :blocks]) < 1e-6
    every_head = torch.ones(3, 4, dtype=torch.bool, device=DEVICE)
    assert rel_error(query_block_means(q, plan, every_head), want_queries) < 1e-6


@pytest.mark.parametrize(
    "launch",
    [
        TopMassLaunch(),
        TopMassLaunch(chunk=1024, tile=256, num_warps=2),
        # every row read whole, then every row from its compact list after the first
        # pass (written by nine programs a row)
        TopMassLaunch(compact_pass=None),
        TopMassLaunch(chunk=1024, tile=128, compact_pass=1, keep=1),
    ],
)
def test_top_mass_matches_sorting(launch):
    gen = torch.Generator().manual_seed(4)
    scores = torch.rand(7, 9000, generator=gen) ** 6
    scores[1, 3000:] = 0  # zero padding
    scores[2] = 0.25  # all tied
    scores[3] = 0
    scores[3, 17] = 2.0  # one spike
    scores[4, ::2] = scores[4, 1::2]  # pairs of ties
    active = torch.tensor([True, True, True, True, True, False, True])
    # Ragged rows over the flat storage, of different lengths and starts.
    row_start = torch.arange(7) * 9000 + torch.tensor([0, 0, 100, 0, 0, 0, 4000])
    row_len = torch.tensor(
        [9000, 9000, 8900, 9000, 5000, 9000, 5000], dtype=torch.int32
    )
    for fraction in (0.5, 0.9, 0.95):
        got = top_mass(
            scores.to(DEVICE),
            row_start.to(DEVICE),
            row_len.to(DEVICE),
            9000,
            fraction,
            active.to(DEVICE),
            launch,
        )
        want = top_mass_twin(scores, row_start, row_len, 9000, fraction, active)
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(
            got[1].cpu(), want[1]
        ), fraction
        # row lengths given as a broadcast (stride-0) tensor, as a torch expression
        # may produce
        lengths = torch.tensor([9000], dtype=torch.int32, device=DEVICE).expand(7)
        got = top_mass(
            scores.to(DEVICE),
            (torch.arange(7) * 9000).to(DEVICE),
            lengths,
            9000,
            fraction,
            active.to(DEVICE),
            launch,
        )
        row_start_full, row_len_full = (
            torch.arange(7) * 9000,
            torch.full((7,), 9000, dtype=torch.int32),
        )
        want = top_mass_twin(
            scores, row_start_full, row_len_full, 9000, fraction, active
        )
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(
            got[1].cpu(), want[1]
        ), fraction
    # Without `active`, every row of nonzero length counts.
    got = top_mass(
        scores.to(DEVICE),
        row_start.to(DEVICE),
        row_len.to(DEVICE),
        9000,
        0.9,
        launch=launch,
    )
    want = top_mass_twin(scores, row_start, row_len, 9000, 0.9)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


def test_top_mass_takes_a_fraction_per_row():
    gen = torch.Generator().manual_seed(12)
    scores = torch.rand(5, 3000, generator=gen) ** 4
    fractions = torch.tensor([0.5, 0.9, 0.95, 0.8, 0.99])
    row_start = torch.arange(5) * 3000
    row_len = torch.full((5,), 3000, dtype=torch.int32)
    got = top_mass(
        scores.to(DEVICE),
        row_start.to(DEVICE),
        row_len.to(DEVICE),
        3000,
        fractions.to(DEVICE),
    )
    for i, fraction in enumerate(fractions.tolist()):
        count, threshold = top_mass_twin(
            scores[i : i + 1], row_start[:1], row_len[:1], 3000, fraction
        )
        assert got[0][i].item() == count.item(), fraction
        assert got[1][i].item() == threshold.item(), fraction


def test_head_patterns_match_the_reference_distance():
    """Three requests of 13, 40 and 75 key blocks (width 75), GQA 3:1, one dense,
    one of vsgrid selection; tau between two of the reference's distances."""
    gen = torch.Generator().manual_seed(11)
    R, Hq, Hkv, D, W = 3, 6, 2, 48, 75
    key_blocks = torch.tensor([13, 40, 75])
    probe_mean = torch.randn(R, Hq, D, generator=gen)
    key_means = torch.randn(R, Hkv, W, D, generator=gen)
    key_means[0, :, 13:] = float("nan")  # past the keys: never read
    masses = torch.rand(R, Hq, W, generator=gen) ** 8
    masses *= torch.arange(W) < key_blocks[:, None, None]
    masses /= masses.sum(-1, keepdim=True)
    scale = 0.2
    want = torch.stack(
        [
            js_distance(
                torch.softmax(
                    torch.einsum(
                        "hd,hnd->hn",
                        probe_mean[i],
                        key_means[i, :, :n].repeat_interleave(Hq // Hkv, 0),
                    )
                    * scale,
                    -1,
                ),
                masses[i, :, :n],
            )
            for i, n in enumerate(key_blocks.tolist())
        ]
    )  # [R, Hq]
    ordered = want.flatten().sort().values
    tau = ((ordered[8] + ordered[9]) / 2).expand(R).contiguous()
    dense = torch.tensor([False, False, True])
    vsgrid = torch.tensor([False, True, False])
    flags = head_patterns(
        *(t.to(DEVICE) for t in (probe_mean, key_means, masses, key_blocks, tau)),
        dense.to(DEVICE), vsgrid.to(DEVICE), scale,
    )  # fmt: skip
    query_aware = (want < tau[0]) & ~dense[:, None]
    assert 0 < query_aware.sum() < R * Hq - Hq
    paper = ~vsgrid[:, None]
    expected = [
        query_aware,
        (query_aware | vsgrid[:, None]) & ~dense[:, None],
        paper & ~query_aware,
        paper & ~query_aware,
        paper & query_aware,
    ]
    got = [flags.query_aware, flags.from_grid, *flags.top_mass_rows]
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g.cpu(), e.to(torch.int8))


def test_top_blocks_match_a_stable_sort():
    """Many ties, forced entries (+inf) and entries past the keys (-inf); budgets
    from token counts, clamped, the minimum for query-aware heads, a vsgrid
    request's own; a width that is not a multiple of the kernel's tiles."""
    gen = torch.Generator().manual_seed(12)
    R, Hq, W, B = 3, 4, 75, 64
    blocks = torch.randint(0, 4, (2, R, Hq, W), generator=gen).float()
    key_blocks = torch.tensor([75, 30, 52])
    forced = torch.zeros(2, R, W)
    forced[:, :, 0] = float("inf")
    forced[1, 1, :3] = float("inf")
    forced[torch.arange(W).expand(2, R, W) >= key_blocks[:, None]] = float("-inf")
    counts = torch.randint(0, 40 * B, (2, R, Hq), generator=gen, dtype=torch.int32)
    low, high = torch.tensor([2, 5, 1]), torch.tensor([60, 30, 9])
    query_aware = torch.rand(R, Hq, generator=gen) < 0.3
    vsgrid = torch.tensor([False, True, False])
    vsgrid_budgets = torch.tensor([[1, 1, 1], [1, 3, 1]])
    kept = top_blocks(
        *(t.to(DEVICE) for t in (blocks, forced, counts, low, high)),
        query_aware.to(device=DEVICE, dtype=torch.int8), vsgrid.to(DEVICE),
        vsgrid_budgets.to(DEVICE), B,
    )  # fmt: skip
    budgets = torch.minimum(torch.maximum(counts // B + 1, low[:, None]), high[:, None])
    budgets = torch.where(query_aware, low[:, None], budgets)
    budgets = torch.where(vsgrid[:, None], vsgrid_budgets[:, :, None], budgets)
    want = top_blocks_reference(blocks + forced[:, :, None], budgets)
    assert torch.equal(kept.cpu(), want.to(torch.int8))


# the second case: at head dim 256 a program takes 32 query blocks and 32 key means a
# step, so 16-token blocks give requests several tiles and several steps
@pytest.mark.parametrize(
    "q_lens, kv_lens, block, head_dim",
    [(Q_LENS, KV_LENS, 64, 32), ((700, 450, 1), (700, 1333, 9), 16, 256)],
)
def test_query_aware_grid_matches_reference(q_lens, kv_lens, block, head_dim):
    q, k, v = varlen_batch(q_lens, kv_lens, 4, 2, head_dim, device=DEVICE, seed=5)
    plan = plan_for(q_lens, kv_lens, block, DEVICE)
    kv = KVSource(k, v)
    query_aware = torch.tensor(
        [[True, False, True, True], [False, True, True, False], [True] * 4],
        device=DEVICE,
    )
    args = (
        query_block_means(q, plan, query_aware),
        key_block_means(kv, plan, head_dim),
    )
    want = query_aware_grid_twin(q, kv, plan, query_aware, 0.3)
    assert rel_error(query_aware_grid(*args, query_aware, plan, 0.3), want) < 1e-6
    # into a poisoned grid: the query-aware heads' rows written whole, the others left
    poisoned = torch.full_like(want, float("nan"))
    got = query_aware_grid(*args, query_aware, plan, 0.3, grid=poisoned)
    rows = query_aware[plan.block_request].T  # [Hq, T]
    assert got.data_ptr() == poisoned.data_ptr()
    assert rel_error(got[rows], want[rows]) < 1e-6
    assert got[~rows].isnan().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_search_and_attention_match_the_reference_end_to_end(dtype):
    """Planted structure in a 3-request batch: a fresh odd-length prompt, a chunk after
    unaligned context, and a short request that runs dense.
    Same blocks, same patterns."""
    config = FlexPrefillConfig(
        block_size=64, min_budget=128, dense_threshold=400, gamma=0.9, tau=0.1,
        max_density=1.0,
    )  # fmt: skip
    parts = [
        planted_qkv(n, 6, 2, 64, 64, query_aware_every=3, seed=n)
        for n in (777, 700, 300)
    ]
    q = torch.cat([parts[0][0], parts[1][0][-350:], parts[2][0]])
    k = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts])
    cu_q = torch.tensor([0, 777, 1127, 1427])
    cu_k = torch.tensor([0, 777, 1477, 1777])
    q, k, v = (t.to(device=DEVICE, dtype=dtype) for t in (q, k, v))
    out, stats = flex_prefill_attention(
        q, k, v, cu_q, cu_k, config=config, return_stats=True, implementation="triton"
    )
    want, want_stats = flex_prefill_attention(
        q,
        k,
        v,
        cu_q,
        cu_k,
        config=config,
        return_stats=True,
        implementation="reference",
    )
    for got_request, want_request in zip(stats, want_stats, strict=True):
        assert got_request.pattern == want_request.pattern
        assert torch.equal(got_request.block_mask.cpu(), want_request.block_mask.cpu())
    assert (
        stats[0].pattern == parts[0][3].kinds()
        and stats[2].pattern == [Pattern.DENSE.label] * 6
    )
    assert not out.isnan().any()
    assert rel_error(out, want) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize(
    "compact", [dict(), dict(compact_pass=2, keep=1)], ids=["whole", "compact"]
)
def test_top_mass_sums_more_partial_histograms_than_one_step_takes(compact):
    """Rows split into more chunks than the last program sums at once
    (``top_mass.GATHER``), and as many programs writing each row's compact list (a
    program's place in it sums more partial counts than one step takes): the same
    count and threshold as sorting."""
    chunks = GATHER + 7
    scores = torch.rand(2, chunks * 128) ** 6
    scores[1, 5000:] = 0
    row_start = torch.tensor([0, scores.shape[1]])
    row_len = torch.tensor([scores.shape[1], 6000], dtype=torch.int32)
    got = top_mass(
        scores.to(DEVICE),
        row_start.to(DEVICE),
        row_len.to(DEVICE),
        scores.shape[1],
        0.9,
        launch=TopMassLaunch(chunk=128, tile=128, **compact),
    )
    want = top_mass_twin(scores, row_start, row_len, scores.shape[1], 0.9)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


@pytest.mark.parametrize("compact_pass", [0, 8])
def test_top_mass_refuses_a_compact_pass_out_of_range(compact_pass):
    with pytest.raises(ValueError, match=f"compact_pass={compact_pass}"):
        top_mass(
            torch.ones(8, device=DEVICE),
            torch.zeros(1, dtype=torch.int64, device=DEVICE),
            torch.full((1,), 8, dtype=torch.int32, device=DEVICE),
            8,
            0.9,
            launch=TopMassLaunch(compact_pass=compact_pass),
        )


# Rows of a grid wider than one tile for the vsgrid thresholds: per query block its
# length, gamma and count clamp (each clamp binding on some row)
THRESHOLD_LENGTHS = [1500, 1500, 700, 5, 1100, 1]
THRESHOLD_GAMMA = [0.9, 0.5, 0.95, 0.9, 0.8, 0.9]
THRESHOLD_LOW, THRESHOLD_HIGH = [1, 3, 1, 4, 400, 1], [1500, 1500, 10, 5, 500, 1]


def threshold_grid(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grid [2, 6, 1500], active [2, 6])`` for the THRESHOLD_ rows: random entries,
    a row all tied, a zero row with one spike, pairs of ties, an inactive row; the
    entries past a row's length are poison."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.rand(2, 6, 1500, generator=gen) ** 6
    grid[0, 1] = 0.25  # all tied
    grid[1, 1] = 0
    grid[1, 1, 917] = 2.0  # one spike
    grid[0, 4, ::2] = grid[0, 4, 1::2]  # pairs of ties
    for t, n in enumerate(THRESHOLD_LENGTHS):
        grid[:, t, n:] = 100.0
    active = torch.ones(2, 6, dtype=torch.bool)
    active[1, 0] = False
    return grid, active


def as_int(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32, device=DEVICE)


def test_vsgrid_row_thresholds_match_sorting_with_the_budget_clamp():
    """Per row (head, query block) of a grid wider than one tile: the threshold of
    ``reference.top_mass`` over the row's first ``length`` entries, its count clamped
    to ``[low, high]`` (each clamp binding on some row); ties, a zero row with one
    spike, an inactive row; entries past a row's length are poison."""
    seed = int(torch.randint(0, 2**31, ()))
    grid, active = threshold_grid(seed)
    lengths, gamma = THRESHOLD_LENGTHS, THRESHOLD_GAMMA
    low, high = THRESHOLD_LOW, THRESHOLD_HIGH
    got = row_thresholds(
        grid.to(DEVICE),
        active.to(DEVICE),
        as_int(lengths),
        torch.tensor(gamma, device=DEVICE),
        as_int(low),
        as_int(high),
    ).cpu()
    for h in range(2):
        for t, n in enumerate(lengths):
            _, want = reference.top_mass(
                grid[h, t, :n], gamma[t], at_least=low[t], at_most=high[t]
            )
            want = want if active[h, t] else torch.tensor(float("inf"))
            assert got[h, t] == want, (seed, h, t)


def test_vsgrid_pooled_weights_maximise_the_held_out_likelihood():
    """Planted structure: a fresh odd-length prompt, a chunk after unaligned cached
    context, a chunk of one query block (nothing held out). Each head's weight is a
    maximiser of ``reference.held_out_likelihood`` (float32 against float64: a near
    tie may go either way) and content heads get 1. The grid above each row's diagonal
    and the masses past each probe's keys are poison."""
    hq, B, scale = 6, 64, 64**-0.5
    q_lens, kv_lens = (1001, 650, 20), (1001, 1283, 340)
    parts = [
        planted_qkv(kv, hq, 2, 64, B, query_aware_every=3, seed=kv)[:3]
        for kv in kv_lens
    ]
    q = torch.cat([p[0][-n:] for p, n in zip(parts, q_lens, strict=True)])
    k, v = (torch.cat([p[i] for p in parts]) for i in (1, 2))
    plan = plan_for(q_lens, kv_lens, B, DEVICE)
    kv = key_source(k.to(DEVICE), v.to(DEVICE), None, kv_lens)
    probes = SegmentProbes.build(plan)
    every_head = torch.ones(3, hq, dtype=torch.bool)
    grid = query_aware_grid_twin(q, kv, plan, every_head, scale)
    grid.masked_fill_(grid == 0, 100.0)  # above the diagonals and past the keys
    masses = segment_masses_twin(q, kv, plan, scale)
    keys = (probes.last.cpu() // B)[:, None, None] + 1
    masses.masked_fill_(torch.arange(plan.max_k_blocks) >= keys, 100.0)
    fit = torch.ones(3, dtype=torch.int8, device=DEVICE)  # every request: vsgrid
    got = pooled_weights(grid.to(DEVICE), masses.to(DEVICE), probes, plan, fit).cpu()
    step = (1 - MIN_POOLED_WEIGHT) / (POOLED_WEIGHTS - 1)
    picked = ((got - MIN_POOLED_WEIGHT) / step).round().long()  # [R, Hq]
    assert torch.allclose(got, MIN_POOLED_WEIGHT + picked * step)
    for r in requests(q, kv, plan):
        segments = reference.segment_block_masses(r.q, r.k, r.geo, scale)
        request_grid = reference.query_aware_grid(r.q, r.k, r.geo, scale)
        likelihood = reference.held_out_likelihood(segments, request_grid, r.geo)
        best = likelihood.max(0).values
        at_pick = likelihood.gather(0, picked[r.index][None])[0]
        assert (at_pick >= best - 1e-5 * best.abs()).all(), (r.index, got[r.index])
    assert got[:2, 2::3].eq(1).all() and got[:2].lt(1).sum() == 8, got
    assert got[2].eq(MIN_POOLED_WEIGHT).all()


def planted_batch(q_lens, kv_lens, page_size):
    """``(q, kv, plan)``: a batch of chunks (the last ``q_lens`` of ``kv_lens`` tokens)
    of planted structure, 6 query heads, 2 KV heads, head dim 64, 64-token blocks; ``q``
    on the CPU, the keys (``key_source`` of ``page_size``) and the plan on DEVICE."""
    parts = [
        planted_qkv(kv, 6, 2, 64, 64, query_aware_every=3, seed=kv) for kv in kv_lens
    ]
    q = torch.cat([p[0][-n:] for p, n in zip(parts, q_lens, strict=True)])
    k, v = (torch.cat([p[i] for p in parts]).to(DEVICE) for i in (1, 2))
    plan = plan_for(q_lens, kv_lens, 64, DEVICE)
    return q, key_source(k, v, page_size, kv_lens), plan


@pytest.mark.parametrize("page_size", [None, 16])
def test_vsgrid_selection_matches_the_reference_in_a_mixed_batch(page_size):
    """Planted structure; a vsgrid request (fresh, odd length), a paper one and a
    vsgrid chunk after unaligned context share the batch. Same blocks, same
    patterns."""
    paper = FlexPrefillConfig(
        block_size=64, min_budget=128, dense_threshold=400, gamma=0.9, max_density=1.0
    )
    vsgrid = paper.with_overrides({"selection": "vsgrid", "min_budget": 64})
    capped = vsgrid.with_overrides({"gamma": 0.8, "min_budget": 192, "max_budget": 256})
    configs = [vsgrid, paper, capped]
    q, kv, plan = planted_batch((1001, 777, 650), (1001, 777, 1283), page_size)
    scale = 64**-0.5
    dense = torch.zeros(3, dtype=torch.bool, device=DEVICE)
    got = find_blocks(q.to(DEVICE), kv, plan, configs, scale, dense)
    masks = index_to_masks(plan, got.kv_index, got.kv_count)
    for r in requests(q, kv, plan):
        want, patterns = (
            reference.vsgrid_search
            if configs[r.index].selection == "vsgrid"
            else reference.search
        )(r.q, r.k, r.geo, configs[r.index], scale)
        assert got.pattern[r.index].tolist() == [int(p) for p in patterns]
        assert torch.equal(masks[r.index].cpu(), want), r.index


def test_rerank_selection_matches_the_reference_in_a_mixed_batch():
    """Planted structure on 16-token pages; a rerank request (fresh, odd length), a
    paper one, a capped rerank chunk of head-wide budget after unaligned context and a
    vsgrid one share the batch. Same blocks, same patterns; the rerank requests' blocks
    are not vsgrid's."""
    paper = FlexPrefillConfig(
        block_size=64, min_budget=128, dense_threshold=400, gamma=0.9, max_density=1.0
    )
    rerank = paper.with_overrides({"selection": "rerank", "min_budget": 64})
    capped = rerank.with_overrides(
        {"gamma": 0.8, "min_budget": 192, "max_budget": 256, "rerank_budget": "head"}
    )
    vsgrid = rerank.with_overrides({"selection": "vsgrid"})
    configs = [rerank, paper, capped, vsgrid]
    q, kv, plan = planted_batch((1001, 777, 650, 500), (1001, 777, 1283, 900), 16)
    scale = 64**-0.5
    dense = torch.zeros(4, dtype=torch.bool, device=DEVICE)
    got = find_blocks(q.to(DEVICE), kv, plan, configs, scale, dense)
    masks = index_to_masks(plan, got.kv_index, got.kv_count)
    for r in requests(q, kv, plan):
        config = configs[r.index]
        search = reference.search if config.selection == "paper" else vsgrid_search
        want, patterns = search(r.q, r.k, r.geo, config, scale)
        assert got.pattern[r.index].tolist() == [int(p) for p in patterns]
        assert torch.equal(masks[r.index].cpu(), want), r.index
        if config.selection == "rerank":
            as_vsgrid = config.with_overrides(
                {"selection": "vsgrid", "rerank_budget": "row"}
            )
            unranked, _ = vsgrid_search(r.q, r.k, r.geo, as_vsgrid, scale)
            assert (want != unranked).sum() > 0.1 * want.sum(), r.index


def test_rerank_candidate_thresholds_take_widen_times_the_count():
    """Per row: the count is the entries at or above the row's top-mass threshold, the
    candidate threshold the value of the ``min(widen x count, length)``-th largest
    entry (widen 1: the threshold itself); ties, a zero row with one spike, an
    inactive row; entries past a row's length are poison."""
    seed = int(torch.randint(0, 2**31, ()))
    grid, active = threshold_grid(seed)
    lengths, gamma = THRESHOLD_LENGTHS, THRESHOLD_GAMMA
    low, high = THRESHOLD_LOW, THRESHOLD_HIGH
    widen = [2, 2, 3, 2, 1, 2]
    candidate, count = candidate_thresholds(
        grid.to(DEVICE),
        active.to(DEVICE),
        as_int(lengths),
        torch.tensor(gamma, device=DEVICE),
        as_int(low),
        as_int(high),
        as_int(widen),
    )
    for h in range(2):
        for t, n in enumerate(lengths):
            if not active[h, t]:
                assert (candidate[h, t], count[h, t]) == (float("inf"), 0)
                continue
            row = grid[h, t, :n]
            _, threshold = reference.top_mass(
                row, gamma[t], at_least=low[t], at_most=high[t]
            )
            want_count = int((row >= threshold).sum())
            wide = min(widen[t] * want_count, n)
            want = row.sort(descending=True).values[wide - 1]
            assert (count[h, t], candidate[h, t]) == (want_count, want), (seed, h, t)


@pytest.mark.parametrize("page_size", [None, 16])
def test_rerank_masses_and_cut_match_the_reference(page_size):
    """Random inputs (odd lengths, GQA, cached context, a one-token chunk) and random
    causal candidate lists holding every forced block; the second request is not of
    rerank selection. The sampled masses of every listed block, the keys walked in
    chunks of 4 blocks (lists straddling chunks, chunks past a row's diagonal), match
    ``reference.sampled_block_masses``; everything else stays poisoned. The cut keeps
    the forced blocks and those at or above each row's keep-th largest mass (of the
    kernel's own masses; some of no mass, some tied) if it is positive, in order; the
    heads of the first and third requests (of head-wide budget, the first's rows
    searched by four programs of four rows) their rows' shares of their row's mass, at
    or above the head's (sum of its rows' keep)-th largest."""
    seed = int(torch.randint(0, 2**31, ()))
    gen = torch.Generator().manual_seed(seed)
    B, hq, hkv, d, scale = 64, 6, 2, 64, 0.2
    q_lens, kv_lens = (900, 300, 1), (900, 1333, 65)
    plan = plan_for(q_lens, kv_lens, B, DEVICE)
    q, k, v = varlen_batch(q_lens, kv_lens, hq, hkv, d, seed=seed)
    kv = key_source(k.to(DEVICE), v.to(DEVICE), page_size, kv_lens)
    rerank = torch.tensor([True, False, True])
    T, W = plan.num_q_blocks, plan.max_k_blocks
    rows = plan.block_row.cpu()
    cols = torch.arange(W)
    causal = cols <= rows[:, None]
    forced = causal & ((cols == 0) | (rows[:, None] - cols < LOCAL_BLOCKS))
    listed = (torch.rand(hq, T, W, generator=gen) < 0.4) & causal | forced
    order = torch.sort((~listed).int(), dim=-1, stable=True).indices
    kv_count = listed.sum(-1).int()
    kv_index = torch.where(cols < kv_count[..., None], order, -7).int()
    masses = torch.full((hq, T, W), float("nan"))
    index, count = kv_index.to(DEVICE, copy=True), kv_count.to(DEVICE, copy=True)
    got = masses.to(DEVICE)
    sampled_block_masses(
        q.to(DEVICE),
        kv,
        plan,
        index,
        count,
        rerank.to(DEVICE),
        scale,
        LOCAL_BLOCKS,
        got,
        chunk_blocks=4,
    )
    got = got.cpu()
    in_list = cols < kv_count[..., None]
    for r in requests(q, kv, plan):
        rows_of = got[:, r.q_blocks]
        if not rerank[r.index]:
            assert rows_of.isnan().all()
            continue
        nk = r.geo.num_k_blocks
        want = reference.sampled_block_masses(
            r.q, r.k, r.geo, scale, listed[:, r.q_blocks, :nk]
        )
        slots = kv_index[:, r.q_blocks].clamp(min=0).long()
        filled = in_list[:, r.q_blocks]
        assert rows_of[~filled].isnan().all(), r.index
        want = want.gather(-1, slots)[filled]
        assert rel_error(rows_of[filled], want) < 1e-5, (seed, r.index)

    keep = (torch.rand(hq, T, generator=gen) * kv_count).int() + 1
    # head 0: slots from the fourth on of no mass, every slot to keep: none of them
    got[0][in_list[0] & (cols >= 3)] = 0.0
    keep[0] = kv_count[0]
    # head 1: masses of a few values, so that the bounds fall on ties
    got[1] = torch.where(in_list[1], (got[1] * 8).round().clamp(min=1) / 8, got[1])
    head_budget = torch.tensor([True, False, True])
    scores = got.to(DEVICE)
    keep_reranked(
        plan, index, count, scores, keep.to(DEVICE), rerank.to(DEVICE),
        head_budget.to(DEVICE), LOCAL_BLOCKS, head_program_rows=4,
    )  # fmt: skip
    index, count, scores = index.cpu(), count.cpu(), scores.cpu()
    block_request = plan.block_request.cpu()
    wide = head_budget[block_request]  # the rows of head-wide requests
    # their masses became shares of each row's sum
    share = got / got.where(in_list, 0.0).sum(-1, keepdim=True)
    listed_of = in_list[:, wide]
    shares = scores[:, wide][listed_of]
    assert rel_error(shares, share[:, wide][listed_of]) < 1e-6
    others = scores[:, ~wide], got[:, ~wide]
    torch.testing.assert_close(*others, rtol=0, atol=0, equal_nan=True)
    head_bound = {}
    for r, h in itertools.product([0, 2], range(hq)):
        rows_of = block_request == r
        kept = int(torch.minimum(keep[h], kv_count[h])[rows_of].sum())
        ranked = scores[h, rows_of][in_list[h, rows_of]].sort(descending=True).values
        head_bound[r, h] = ranked[kept - 1]
    moved = 0  # head-wide rows that keep another number of blocks than their own
    for h in range(hq):
        for g in range(T):
            n = int(kv_count[h, g])
            blocks, mass = kv_index[h, g, :n], scores[h, g, :n]
            if rerank[block_request[g]]:
                pinned = forced[g, blocks.long()]
                own = mass.sort(descending=True).values[keep[h, g] - 1]
                own = blocks[pinned | ((mass >= own) & (mass > 0))]
                if head_budget[block_request[g]]:
                    last = head_bound[int(block_request[g]), h]
                    blocks = blocks[pinned | ((mass >= last) & (mass > 0))]
                    moved += len(blocks) != len(own)
                else:
                    blocks = own
            assert index[h, g, : len(blocks)].tolist() == blocks.tolist(), (seed, h, g)
            assert count[h, g] == len(blocks), (seed, h, g)
    assert moved > 0, seed


# A fresh odd-length prompt, a chunk after 300 cached tokens, a denser short prompt and
# a chunk shorter than a block (dense by the routing): (q_len, kv_len). With
# max_density 1 the first three select 129/220 (0.59), 91/180 (0.51) and 64/84 (0.76)
# of their causal block pairs.
MIXED = [(601, 601), (300, 600), (333, 333), (40, 300)]
MIXED_DENSITIES = [129 / 220, 91 / 180, 64 / 84]
# max_density auto: the portable kernel's break-even (the CPU runs no other) at the
# test's 64-token blocks
AUTO_DENSE = [
    i
    for i, density in enumerate(MIXED_DENSITIES)
    if density > break_even_density(MIXED[i][1], hopper_kernel=False, block_size=64)
] + [3]


@pytest.mark.parametrize(
    "max_density, expected_dense",
    [
        (0.55, [0, 2, 3]),
        # the first request's own fraction: a boundary where it stays sparse
        (129 / 220, [2, 3]),
        ("auto", AUTO_DENSE),
    ],
)
def test_requests_denser_than_max_density_run_dense_as_in_the_reference(
    max_density, expected_dense
):
    """The kernels' search sends the same requests dense as the reference (every
    causal block, every head DENSE), keeps the others' selection, and attends
    accordingly."""
    hq, hkv, d, B = 4, 2, 32, 64
    config = FlexPrefillConfig(
        block_size=B,
        min_budget=2 * B,
        dense_threshold=256,
        gamma=0.9,
        tau=0.1,
        max_density=max_density,
    )
    parts = [
        planted_qkv(kv_len, hq, hkv, d, B, query_aware_every=2, seed=kv_len)[:3]
        for _, kv_len in MIXED
    ]
    q_lens, kv_lens = [m[0] for m in MIXED], [m[1] for m in MIXED]
    q = torch.cat([p[0][-n:] for p, n in zip(parts, q_lens, strict=True)])
    k, v = (torch.cat([p[i] for p in parts]) for i in (1, 2))
    q, k, v = (t.to(DEVICE) for t in (q, k, v))
    plan = plan_for(q_lens, kv_lens, B, DEVICE)
    dense = torch.tensor(
        [not config.runs_sparse(a, b) for a, b in zip(q_lens, kv_lens, strict=True)],
        device=DEVICE,
    )
    scale = d**-0.5
    out = torch.full_like(q, float("nan"))
    result = flex_prefill_forward(q, KVSource(k, v), plan, config, scale, dense, out)
    searched = find_blocks(q, KVSource(k, v), plan, config, scale, dense)
    assert torch.equal(searched.kv_count, result.kv_count)
    assert torch.equal(searched.pattern, result.pattern)
    assert not out.isnan().any()

    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    went_dense = []
    rows = plan.q_start.tolist()
    keys = plan.k_start.tolist()
    for i, (q_len, kv_len) in enumerate(zip(q_lens, kv_lens, strict=True)):
        geo = ChunkGeometry(q_len, kv_len, B)
        rq = slice(rows[i], rows[i] + q_len)
        rk = slice(keys[i], keys[i] + kv_len)
        want_out, _, want = flex_prefill_reference(
            q[rq].cpu(), k[rk].cpu(), v[rk].cpu(), config, scale
        )
        pattern = [Pattern(c).label for c in result.pattern[i].tolist()]
        assert pattern == want.pattern, i
        assert torch.equal(masks[i].cpu(), want.block_mask), i
        assert rel_error(out[rq], want_out) < 1e-5, i
        if want.pattern == [Pattern.DENSE.label] * hq:
            assert torch.equal(
                masks[i].cpu(), geo.causal_block_mask().expand(hq, -1, -1)
            )
            want_dense = dense_attention(q[rq].cpu(), k[rk].cpu(), v[rk].cpu(), scale)
            assert rel_error(out[rq], want_dense) < 1e-5, i
            went_dense.append(i)
        else:
            assert Pattern.DENSE.label not in want.pattern
    # the routing's dense request, and those sent dense by max_density
    assert went_dense == expected_dense


# Per request: (q_len, kv_len) and its own settings, in one batch.
PER_REQUEST = [
    ((601, 601), dict(gamma=0.8, tau=0.0)),
    ((300, 600), dict(gamma=0.95, tau=0.3, max_budget=192)),
    ((333, 333), dict(gamma=0.9, tau=0.1, max_density=0.5)),
]


def test_each_request_of_a_batch_gets_its_own_settings():
    """A batch whose requests carry different gamma, tau, max_budget and max_density
    selects for each what the reference selects under that request's settings."""
    hq, hkv, d, B = 4, 2, 32, 64
    base = FlexPrefillConfig(
        block_size=B, min_budget=2 * B, dense_threshold=0, max_density=1.0
    )
    configs = [base.with_overrides(settings) for _, settings in PER_REQUEST]
    lens = [rows for rows, _ in PER_REQUEST]
    parts = [
        planted_qkv(kv_len, hq, hkv, d, B, query_aware_every=2, seed=kv_len)[:3]
        for _, kv_len in lens
    ]
    q_lens, kv_lens = [q for q, _ in lens], [kv for _, kv in lens]
    q = torch.cat([p[0][-n:] for p, n in zip(parts, q_lens, strict=True)])
    k, v = (torch.cat([p[i] for p in parts]) for i in (1, 2))
    q, k, v = (t.to(DEVICE) for t in (q, k, v))
    plan = plan_for(q_lens, kv_lens, B, DEVICE)
    dense = torch.zeros(3, dtype=torch.bool, device=DEVICE)
    out = torch.full_like(q, float("nan"))
    kv = KVSource(k, v)
    result = flex_prefill_forward(q, kv, plan, configs, d**-0.5, dense, out)
    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    patterns = set()
    for r in requests(q, kv, plan):
        want_out, _, want = flex_prefill_reference(
            r.q, r.k, r.v, configs[r.index], d**-0.5
        )
        pattern = [Pattern(c).label for c in result.pattern[r.index].tolist()]
        assert pattern == want.pattern, r.index
        assert torch.equal(masks[r.index].cpu(), want.block_mask), r.index
        assert rel_error(out[r.rows], want_out) < 1e-5, r.index
        patterns.add(tuple(pattern))
    # the settings made a difference: the requests' selections differ in kind
    assert len(patterns) == 3
    coarse = base.with_overrides({"block_size": 128})
    with pytest.raises(ValueError, match="block_size 128 in a plan of 64-token"):
        find_blocks(q, kv, plan, [base, base, coarse], d**-0.5, dense)


def test_a_tensor_parallel_rank_computes_its_slice_of_the_heads():
    """Under tensor parallelism each rank runs the kernels on its ``Hq/tp`` query and
    ``Hkv/tp`` KV heads: with the selection per head (``max_density`` 1), each rank's
    output and selection are exactly its slice of the whole layer's."""
    hq, hkv, d, B, tp = 8, 4, 32, 64, 2
    config = FlexPrefillConfig(
        block_size=B, min_budget=2 * B, dense_threshold=0, max_density=1.0
    )
    q, k, v, _ = planted_qkv(700, hq, hkv, d, B, query_aware_every=2, seed=9)
    q, k, v = (t.to(DEVICE) for t in (q, k, v))
    plan = plan_for([700], [700], B, DEVICE)
    dense = torch.zeros(1, dtype=torch.bool, device=DEVICE)
    whole = torch.full_like(q, float("nan"))
    everything = flex_prefill_forward(
        q, KVSource(k, v), plan, config, d**-0.5, dense, whole
    )
    for rank in range(tp):
        heads = slice(rank * hq // tp, (rank + 1) * hq // tp)
        kv_heads = slice(rank * hkv // tp, (rank + 1) * hkv // tp)
        q_rank = q[:, heads].contiguous()
        out = torch.full_like(q_rank, float("nan"))
        kv = KVSource(k[:, kv_heads].contiguous(), v[:, kv_heads].contiguous())
        mine = flex_prefill_forward(q_rank, kv, plan, config, d**-0.5, dense, out)
        assert torch.equal(out, whole[:, heads])
        assert torch.equal(mine.pattern, everything.pattern[:, heads])
        assert torch.equal(mine.kv_count, everything.kv_count[heads])


def test_a_long_prompt_matches_the_reference():
    """Past the single-iteration sizes of the small tests: two log-sum-exp splits, three
    top-mass chunks per row, more than 128 key blocks per block list, long
    query-aware rows."""
    config = FlexPrefillConfig(
        block_size=64, min_budget=128, dense_threshold=0, max_density=1.0
    )
    q, k, v, planted = planted_qkv(
        9000, 2, 1, 32, 64, query_aware_every=2, seed=3, device=DEVICE
    )
    cu = torch.tensor([0, 9000])
    out, stats = flex_prefill_attention(
        q, k, v, cu, cu, config=config, return_stats=True, implementation="triton"
    )
    want, want_stats = flex_prefill_attention(
        q, k, v, cu, cu, config=config, return_stats=True, implementation="reference"
    )
    assert stats[0].pattern == want_stats[0].pattern == planted.kinds()
    assert torch.equal(stats[0].block_mask.cpu(), want_stats[0].block_mask.cpu())
    assert rel_error(out, want) < 1e-5


def test_paged_keys_give_the_same_result_as_contiguous_keys():
    config = FlexPrefillConfig(
        block_size=64, min_budget=64, dense_threshold=0, max_density=1.0
    )
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 32, device=DEVICE, seed=6)
    plan = plan_for(Q_LENS, KV_LENS, 64, DEVICE)
    dense = torch.zeros(3, dtype=torch.bool, device=DEVICE)
    outs, results = [], []
    for kv in (KVSource(k, v), paged_copy(k, v, KV_LENS, 16)):
        out = torch.full_like(q, float("nan"))
        results.append(flex_prefill_forward(q, kv, plan, config, 0.2, dense, out))
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) and not outs[0].isnan().any()
    assert torch.equal(results[0].kv_count, results[1].kv_count)
    assert torch.equal(results[0].pattern, results[1].pattern)


@pytest.mark.parametrize("page_size", [None, 128])
def test_attention_launch_variants_agree(page_size):
    """Program order and bulk-copy (TMA) tile loads change nothing in the result."""
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 64, torch.float16, DEVICE, seed=7)
    plan = plan_for(Q_LENS, KV_LENS, 128, DEVICE)
    kv_index, kv_count = block_lists(plan, *random_selection(plan, 4, seed=8))
    kv = key_source(k, v, page_size)
    outs = []
    for launch in (
        AttentionLaunch(64, 4, 2),
        AttentionLaunch(64, 4, 2, heads_fastest=False, heavy_first=True),
        AttentionLaunch(64, 4, 2, tma=True),
    ):
        outs.append(torch.full_like(q, float("nan")))
        block_sparse_attention(
            q, kv, plan, kv_index, kv_count, 0.2, outs[-1], launch=launch
        )
    assert not outs[0].isnan().any()
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_a_cache_laid_out_head_major_is_read_in_place(monkeypatch):
    """vLLM's HND layout (``VLLM_KV_CACHE_LAYOUT=HND``: a page's tokens inside each
    head): bulk copies cannot read it, so tiles load through pointers, with the same
    result, and no bulk-copy view (which would copy the whole cache) is made."""
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 64, torch.float16, DEVICE, seed=7)
    plan = plan_for(Q_LENS, KV_LENS, 128, DEVICE)
    kv_index, kv_count = block_lists(plan, *random_selection(plan, 4, seed=8))
    nhd = key_source(k, v, 128)

    def head_major(cache):  # same values, each head's tokens contiguous
        return cache.transpose(1, 2).contiguous().transpose(1, 2)

    hnd = replace(nhd, key=head_major(nhd.key), value=head_major(nhd.value))
    viewed = []
    real_view = sparse_attention.page_view
    monkeypatch.setattr(
        sparse_attention,
        "page_view",
        lambda cache, paged: viewed.append(cache) or real_view(cache, paged),
    )
    outs = []
    for kv in (nhd, hnd):
        viewed.clear()
        outs.append(torch.full_like(q, float("nan")))
        launch = AttentionLaunch(64, 4, 2, tma=True)
        block_sparse_attention(
            q, kv, plan, kv_index, kv_count, 0.2, outs[-1], launch=launch
        )
        assert len(viewed) == (2 if kv is nhd else 0)
    assert not outs[0].isnan().any() and torch.equal(outs[0], outs[1])


def fp8_source(k, v, page_size, kv_lens=KV_LENS):
    """fp8 copies of ``k, v`` with their scales, contiguous or paged."""
    (k8, key_scale), (v8, value_scale) = fp8_quantised(k), fp8_quantised(v)
    return key_source(k8, v8, page_size, kv_lens, (key_scale, value_scale))


def fp8_attention_case(page_size, seed):
    """An fp8 batch of ``KV_LENS`` (4 query / 2 KV heads, d 128) on 128-token blocks
    with a random selection: ``(attention arguments, (out, lse) of the reference on
    the dequantised values)``; the arguments are ``q8, kv, plan, kv_index, kv_count,
    scale`` and ``q_scale``'s value last."""
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 128, device=DEVICE, seed=seed)
    q8, q_scale = fp8_quantised(q)
    kv = fp8_source(k, v, page_size)
    plan = plan_for(Q_LENS, KV_LENS, 128, DEVICE)
    selection = random_selection(plan, 4, seed=seed + 1)
    kv_index, kv_count = block_lists(plan, *selection)
    want = block_sparse_attention_twin(
        fp8_dequantised(q8, q_scale), kv, plan, kv_index, kv_count, 0.2
    )
    return (q8, kv, plan, kv_index, kv_count, 0.2, q_scale), want


def fp8_outputs(shape):
    """Poisoned 16-bit ``out`` and float32 ``lse`` for queries of ``shape``."""
    out = torch.full(shape, float("nan"), dtype=torch.float16, device=DEVICE)
    return out, torch.full(shape[:2], float("nan"), device=DEVICE)


@pytest.mark.parametrize("page_size", [None, 16, 128])
def test_fp8_attention_matches_the_reference_on_dequantised_inputs(page_size):
    """fp8 queries, keys and values (128-key bulk-copied tiles on 128-token pages),
    16-bit output: the reference attends the dequantised values."""
    (*args, q_scale), (want_out, want_lse) = fp8_attention_case(page_size, seed=9)
    out, lse = fp8_outputs(args[0].shape)
    block_sparse_attention(*args, out, lse, q_scale=q_scale)
    assert not out.isnan().any()
    assert rel_error(out, want_out) < 2e-3
    assert rel_error(lse, want_lse) < 1e-5


@pytest.mark.parametrize("page_size", [None, 128])
def test_fp8_probabilities_stay_close_to_the_reference(page_size):
    """The ``fp8_probabilities`` launch: probabilities times values in fp8, as FA3's
    fp8 path does (3-bit mantissas: a looser bound than the widened values'), the
    log-sum-exp as exact as ever."""
    (*args, q_scale), (want_out, want_lse) = fp8_attention_case(page_size, seed=13)
    default = AttentionLaunch.default(128)
    outs = {}
    for fp8_probabilities in (False, True):
        launch = replace(default, fp8_probabilities=fp8_probabilities)
        out, lse = fp8_outputs(args[0].shape)
        block_sparse_attention(*args, out, lse, launch, q_scale)
        outs[fp8_probabilities] = out, lse
    (widened, _), (fp8_out, fp8_lse) = outs[False], outs[True]
    assert not fp8_out.isnan().any()
    assert rel_error(fp8_out, want_out) < 3e-2
    # coarser than the widened values, so it is really the fp8 product
    assert rel_error(fp8_out, want_out) > 2 * rel_error(widened, want_out)
    assert rel_error(fp8_lse, want_lse) < 1e-5


def test_fp8_probes_and_block_means_match_the_reference_on_dequantised_inputs():
    q, k, v = varlen_batch(Q_LENS, KV_LENS, 4, 2, 64, device=DEVICE, seed=11)
    q8, q_scale = fp8_quantised(q)
    real_q = fp8_dequantised(q8, q_scale)
    kv = fp8_source(k, v, 16)
    plan = plan_for(Q_LENS, KV_LENS, 64, DEVICE)
    got = probe(q8, kv, plan, 0.125, q_scale=q_scale)
    want = probe_twin(real_q, kv, plan, 0.125)
    for name in ("tokens", "vertical_blocks", "slash_blocks", "probe_mean"):
        assert rel_error(getattr(got, name), getattr(want, name)) < 1e-5, name
    masses = segment_block_masses(
        q8, kv, plan, SegmentProbes.build(plan), 0.125, q_scale
    )
    assert rel_error(masses, segment_masses_twin(real_q, kv, plan, 0.125)) < 1e-5
    want_keys, want_queries = block_means_twin(real_q, kv, plan)
    got_keys = key_block_means(kv, plan, 64)
    for i, kv_len in enumerate(KV_LENS):
        blocks = cdiv(kv_len, 64)
        assert rel_error(got_keys[i, :, :blocks], want_keys[i, :, :blocks]) < 1e-6
    every_head = torch.ones(3, 4, dtype=torch.bool, device=DEVICE)
    got_queries = query_block_means(q8, plan, every_head, q_scale)
    assert rel_error(got_queries, want_queries) < 1e-6


@pytest.mark.parametrize("selection", ["paper", "rerank"])
def test_fp8_search_and_attention_match_the_reference_on_dequantised_inputs(selection):
    """Planted structure, stored as fp8 on 16-token pages: a fresh prompt and a chunk
    after unaligned cached context. Same patterns, same blocks, and the output of the
    reference run on the dequantised values."""
    hq, d, B = 4, 64, 64
    config = FlexPrefillConfig(
        block_size=B,
        min_budget=2 * B,
        dense_threshold=0,
        gamma=0.9,
        tau=0.1,
        selection=selection,
        max_density=1.0,  # the selection itself is compared: no request runs dense
    )
    q_lens, kv_lens = (601, 250), (601, 650)
    parts = [
        planted_qkv(n, hq, 2, d, B, query_aware_every=2, seed=n)[:3] for n in kv_lens
    ]
    q = torch.cat([p[0][-n:] for p, n in zip(parts, q_lens, strict=True)])
    k, v = (torch.cat([p[i] for p in parts]).to(DEVICE) for i in (1, 2))
    q8, q_scale = fp8_quantised(q.to(DEVICE))
    kv = fp8_source(k, v, 16, kv_lens)
    plan = plan_for(q_lens, kv_lens, B, DEVICE)
    dense = torch.zeros(2, dtype=torch.bool, device=DEVICE)
    out = torch.full(q.shape, float("nan"), dtype=torch.float16, device=DEVICE)
    result = flex_prefill_forward(
        q8, kv, plan, config, d**-0.5, dense, out, q_scale=q_scale
    )
    masks = index_to_masks(plan, result.kv_index, result.kv_count)
    real_q = fp8_dequantised(q8, q_scale)
    for r in requests(real_q, kv, plan):
        want_out, _, want = flex_prefill_reference(r.q, r.k, r.v, config, d**-0.5)
        pattern = [Pattern(c).label for c in result.pattern[r.index].tolist()]
        assert pattern == want.pattern and "dense" not in pattern, r.index
        assert torch.equal(masks[r.index].cpu(), want.block_mask), r.index
        assert rel_error(out[r.rows], want_out) < 2e-3, r.index


def test_warm_up_runs_every_kernel_on_a_tiny_paged_batch():
    # raises if any kernel fails
    warm_up(torch.float16, 4, 2, 64, 64, 16, torch.device(DEVICE))


def test_the_break_even_follows_the_kernel_that_computes_the_blocks(monkeypatch):
    """``max_density: auto`` takes the Hopper kernel's break-even exactly where the
    default launch hands the batch to it: 16-bit caches of head size 128 on a Hopper
    GPU, in pages that tile a block; fp8 caches, other head sizes and other GPUs
    take the portable kernel's."""
    cuda, bf16, fp8 = torch.device("cuda"), torch.bfloat16, torch.float8_e4m3fn
    cpu = torch.device("cpu")
    assert not hopper_kernel_runs(cpu, bf16, bf16, 128, 128, 128)
    monkeypatch.setattr(hopper_common, "is_hopper", lambda device: True)
    assert hopper_kernel_runs(cuda, bf16, bf16, 128, 128, 128)
    assert hopper_kernel_runs(cuda, torch.float16, torch.float16, 128, 64, 16)
    assert hopper_kernel_runs(cuda, bf16, bf16, 128, 128, None)  # contiguous K/V
    assert not hopper_kernel_runs(cuda, fp8, fp8, 128, 128, 128)
    assert not hopper_kernel_runs(cuda, bf16, bf16, 64, 128, 128)  # portable launch
    assert not hopper_kernel_runs(cuda, bf16, bf16, 256, 128, 128)
    assert not hopper_kernel_runs(cuda, bf16, bf16, 128, 128, 8)  # 8-token pages
    # the batch's own test also reads the layout: vLLM's head-major (HND) pages go to
    # the portable kernel, and so does its break-even
    q = torch.zeros(256, 4, 128, dtype=bf16)
    table = torch.arange(2, dtype=torch.int32)[None]
    token_major = torch.zeros(
        2, 2, 128, 2, 128, dtype=bf16
    )  # [pages, K/V, slot, Hkv, D]
    head_major = torch.zeros(2, 2, 2, 128, 128, dtype=bf16).transpose(2, 3)
    for cache, takes in ((token_major, True), (head_major, False)):
        kv = KVSource(cache[:, 0], cache[:, 1], table)
        assert hopper_kernel_takes(q, kv, 128) == takes
