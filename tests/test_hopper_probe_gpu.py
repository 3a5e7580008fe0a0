"""The probe's warp-specialised Hopper kernels on an sm_90 GPU: the log-sum-exp
statistics (``kernels/hopper_probe.py``) and the scores pass
(``kernels/hopper_probe_scores.py``), each alone and both: the whole probe with them
against the portable probe and against the reference, on GQA, a prompt longer than one
split of keys, a chunk after unaligned cached context, a one-token chunk, a prompt
shorter than a block, contiguous keys and paged ones; the scores pass's atomic sums
are deterministic. Run with ``pytest -m gpu``."""

import dataclasses

import pytest
import torch
from helpers import HOPPER_SHAPES, PAGE_SIZES, rel_error, scattered_batch
from kernel_twins import probe_twin
from test_kernels import key_source

from vllm_flexprefill.kernels import hopper_common
from vllm_flexprefill.kernels.probe import ProbeLaunch, probe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
        reason="needs a Hopper GPU",
    ),
]

# a fresh prompt, a chunk after 8001 cached tokens (two splits of keys), one token
# after 4096, a prompt shorter than a block
Q_LENS, KV_LENS = (3000, 1000, 1, 77), (3000, 9001, 4097, 77)
Q_STARTS = [0, 3100, 4200, 4300]  # gaps between the requests' rows
ROWS = 4400


# (statistics on Hopper, scores on Hopper): both on every shape and page size, each
# alone on Llama's shape
CASES = [(True, True, page, *shape) for page in PAGE_SIZES for shape in HOPPER_SHAPES]
CASES += [
    (*alone, page, *HOPPER_SHAPES[0])
    for alone in ((True, False), (False, True))
    for page in PAGE_SIZES
]


@pytest.mark.parametrize("row_stats, scores, page_size, hq, hkv, d, dtype", CASES)
def test_hopper_kernels_give_the_portable_probe(
    row_stats, scores, page_size, hq, hkv, d, dtype
):
    q_full, k, v, plan = scattered_batch(
        Q_LENS, KV_LENS, Q_STARTS, ROWS, hq, hkv, d, dtype, "cuda", seed=d + hq
    )
    kv = key_source(k, v, page_size, KV_LENS)
    assert hopper_common.supports(q_full, kv, 128)
    portable = dataclasses.replace(
        ProbeLaunch.default(d, quantised=False),
        hopper_row_stats=False,
        hopper_scores=False,
    )
    # two key blocks a program: programs meet inside a request's diagonals
    launch = dataclasses.replace(
        portable,
        hopper_row_stats=row_stats,
        hopper_scores=scores,
        hopper_blocks_per_program=2,
    )

    scale = d**-0.5
    got = probe(q_full, kv, plan, scale, launch)
    same = probe(q_full, kv, plan, scale, portable)
    want = probe_twin(q_full, kv, plan, scale)
    for name in ("tokens", "vertical_blocks", "slash_blocks", "probe_mean"):
        value = getattr(got, name)
        assert not value.isnan().any(), name
        assert rel_error(value, getattr(same, name)) < 1e-5, name
        assert rel_error(value, getattr(want, name)) < 1e-3, name
    again = probe(q_full, kv, plan, scale, launch)
    assert torch.equal(again.tokens, got.tokens)
    assert torch.equal(again.blocks, got.blocks)
