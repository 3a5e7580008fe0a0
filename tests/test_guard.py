"""The density guard's decisions on the CPU: thresholds, hysteresis, probes, the
readback's lag and per-layer, per-length state (the backend's use of it:
test_backend.py; no host synchronisation on a GPU: test_backend_gpu.py)."""

import pytest
import torch

from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill.break_even import break_even_density
from vllm_flexprefill.guard import (
    PROBE_INTERVAL,
    RETURN_FRACTION,
    DensityGuard,
    LayerGuard,
    Mode,
    length_bucket,
)

SHORT = length_bucket(20000)  # the key-length bucket of a 20K-token batch


def modes(guard: LayerGuard, calls: int) -> list[Mode]:
    return [guard.mode() for _ in range(calls)]


def test_an_unmeasured_layer_probes_until_its_density_arrives():
    guard = LayerGuard(0.6)
    assert modes(guard, 3) == [Mode.PROBE] * 3
    assert guard.observe(0.2)  # decided: sparse
    assert modes(guard, 3) == [Mode.SPARSE] * 3
    assert not guard.observe(0.3)  # no switch


def test_a_layer_above_max_density_runs_dense_and_probes_once_per_interval():
    guard = LayerGuard(0.6, probe_offset=5)
    assert guard.observe(0.95) and guard.dense
    run = modes(guard, 3 * PROBE_INTERVAL)
    probes = [i for i, mode in enumerate(run) if mode is Mode.PROBE]
    assert len(probes) == 3 and set(run) == {Mode.DENSE, Mode.PROBE}
    assert probes[1] - probes[0] == probes[2] - probes[1] == PROBE_INTERVAL
    # the offset staggers layers: another offset probes on other calls
    other = LayerGuard(0.6, probe_offset=6)
    other.observe(0.95)
    other_probes = [i for i, m in enumerate(modes(other, 48)) if m is Mode.PROBE]
    assert not set(other_probes) & set(probes)


@pytest.mark.parametrize("max_density", [0.3, 0.6, 0.9])
def test_thresholds_with_hysteresis(max_density):
    low = RETURN_FRACTION * max_density
    guard = LayerGuard(max_density)
    assert guard.observe(max_density)  # the first measurement; at the limit: sparse
    assert not guard.dense
    guard.observe(max_density - 0.02)  # smoothed: half-way between
    assert not guard.dense and guard.density == pytest.approx(max_density - 0.01)
    assert guard.observe(max_density + 0.05) and guard.dense
    # in the band between RETURN_FRACTION * max_density and max_density: stays dense
    for _ in range(8):
        assert not guard.observe((low + max_density) / 2)
    assert guard.dense
    # well under the band: back to sparse within a few measurements
    switched = [guard.observe(low / 2) for _ in range(4)]
    assert switched.count(True) == 1 and not guard.dense
    assert guard.mode() is Mode.SPARSE


def test_max_density_one_turns_the_guard_off():
    guard = LayerGuard(1.0)
    assert guard.mode() is Mode.SPARSE  # not even a first probe
    guard.observe(1.0)
    assert not guard.dense and guard.mode() is Mode.SPARSE


def test_a_limit_of_zero_runs_dense_from_the_first_call_without_probes():
    """``auto`` reads 0 where a config's sparse path never pays: no density could
    bring the layer back, so it neither probes nor searches."""
    guard = LayerGuard(0.0, auto=True)
    assert guard.dense
    assert set(modes(guard, 3 * PROBE_INTERVAL)) == {Mode.DENSE}
    assert guard.reason(Mode.DENSE) == (
        "dense: the sparse path never pays at this length (max_density auto (0 here))"
    )


def test_reasons_say_what_ran_and_why():
    guard = LayerGuard(0.6)
    assert guard.reason(Mode.PROBE) == "probe: density not measured yet"
    guard.observe(0.8)
    assert guard.reason(Mode.DENSE) == "dense: density 0.800 above max_density 0.6"
    assert guard.reason(Mode.PROBE).startswith("probe: re-measuring a dense layer")
    guard = LayerGuard(0.6)
    guard.observe(0.25)
    assert guard.reason(Mode.SPARSE) == "sparse: density 0.250 <= max_density 0.6"
    assert LayerGuard(1.0).reason(Mode.SPARSE) == "sparse: guard off (max_density 1)"


def configs(*max_densities):
    layers = {
        f"model.layers.{i}.self_attn.attn": FlexPrefillConfig(max_density=d)
        for i, d in enumerate(max_densities)
    }
    return layers | {"model.layers.9.self_attn.attn": None}  # a layer run dense


def count(selected_per_head: list[int]) -> torch.Tensor:
    """A search's kv_count [Hq, T] whose total is sum(selected_per_head)."""
    return torch.tensor(selected_per_head, dtype=torch.int32)[:, None]


def test_densities_arrive_one_step_later_per_layer():
    names = list(configs(0.6, 0.6))[:2]
    guard = DensityGuard(configs(0.6, 0.6), torch.device("cpu"))
    assert set(guard.slot) == set(names)  # the dense layer is not guarded
    assert guard.begin_step(names, SHORT) == dict.fromkeys(names, Mode.PROBE)
    guard.record(names[0], SHORT, count([40, 40]), causal_pairs=100)  # density 0.8
    guard.record(names[1], SHORT, count([10, 10]), causal_pairs=100)  # density 0.2
    # step 2: the counters are copied out behind step 1's layers, not yet read
    assert guard.begin_step(names, SHORT) == dict.fromkeys(names, Mode.PROBE)
    assert guard.counts.count_nonzero() == 0  # cleared for the next interval
    guard.record(names[0], SHORT, count([45, 45]), causal_pairs=100)
    guard.record(names[1], SHORT, count([5, 5]), causal_pairs=100)
    # step 3: step 1's densities are in
    third = guard.begin_step(names, SHORT)
    assert guard.state(names[0], SHORT).density == pytest.approx(0.8)
    assert guard.state(names[1], SHORT).density == pytest.approx(0.2)
    assert third[names[1]] is Mode.SPARSE and third[names[0]] in (
        Mode.DENSE,
        Mode.PROBE,
    )
    guard.begin_step(names, SHORT)  # step 4: step 2's densities, smoothed in
    assert guard.state(names[0], SHORT).density == pytest.approx(0.85)
    assert guard.state(names[1], SHORT).density == pytest.approx(0.15)


def test_length_buckets_are_powers_of_two():
    assert [length_bucket(n) for n in (1, 2, 3, 4, 5)] == [0, 1, 2, 2, 3]
    assert length_bucket(16384) == 14 and length_bucket(16385) == 15
    assert length_bucket(262144) == 18 and length_bucket(262145) == 19
    assert length_bucket(2**31 - 1) == 31


def test_short_prompts_densities_never_route_a_long_one():
    """A fixed budget is dense-worthy at 20K keys and a few percent at 256K: each
    length bucket is measured and decided on its own, in the same readback."""
    name = list(configs(0.6))[0]
    guard = DensityGuard(configs(0.6), torch.device("cpu"))
    long = length_bucket(256000)
    guard.begin_step([name], SHORT)
    guard.record(name, SHORT, count([80, 80]), causal_pairs=200)  # density 0.8
    guard.begin_step([name], SHORT)  # queues the readback
    guard.begin_step([name], SHORT)  # takes it in: dense at 20K
    assert guard.state(name, SHORT).dense
    # the first long batch is not routed by the short one's density: it probes
    assert guard.begin_step([name], long) == {name: Mode.PROBE}
    guard.record(name, long, count([3, 3]), causal_pairs=100)  # density 0.06
    guard.record(name, SHORT, count([90, 90]), causal_pairs=200)  # density 0.9
    guard.begin_step([name], long)
    assert guard.begin_step([name], long) == {name: Mode.SPARSE}
    assert guard.state(name, long).density == pytest.approx(0.06)
    assert guard.state(name, SHORT).density == pytest.approx(0.85)  # smoothed
    assert guard.state(name, SHORT).dense


def test_a_longer_length_starts_from_a_sparse_shorter_one():
    """After a sparse shorter bucket, a new longer one runs sparse from its first call
    (no probe) on the shorter density, until its own replaces it; and if the longer
    length turns out dense, it switches when that density arrives."""
    names = list(configs(0.6, 0.6))[:2]
    guard = DensityGuard(configs(0.6, 0.6), torch.device("cpu"))
    mid, long = length_bucket(60000), length_bucket(256000)
    guard.state(names[0], SHORT).observe(0.3)  # sparse at 20K
    guard.state(names[1], SHORT).observe(0.9)  # dense at 20K
    assert guard.begin_step(names, long) == {
        names[0]: Mode.SPARSE,
        names[1]: Mode.PROBE,
    }
    inherited = guard.state(names[0], long)
    assert inherited.inherited and inherited.density == pytest.approx(0.3)
    assert "not yet measured" in inherited.reason(Mode.SPARSE)
    guard.record(names[0], long, count([4, 4]), causal_pairs=100)  # 0.08 here
    guard.begin_step(names, long)
    guard.begin_step(names, long)
    assert not inherited.inherited
    assert inherited.density == pytest.approx(0.08)  # replaced, not smoothed
    # the nearest measured shorter bucket decides: now dense at 256K, so a longer
    # length probes; a length between 20K and 256K still starts from 20K's
    inherited.observe(0.95)
    inherited.observe(0.95)  # smoothed: 0.73
    assert inherited.dense
    assert guard.begin_step(names[:1], length_bucket(400000)) == {names[0]: Mode.PROBE}
    assert guard.begin_step(names[:1], mid) == {names[0]: Mode.SPARSE}
    # a longer length that is denser than the shorter one goes dense on arrival
    guard.record(names[0], mid, count([45, 45]), causal_pairs=100)  # 0.9
    guard.begin_step(names[:1], mid)
    assert guard.begin_step(names[:1], mid) != {names[0]: Mode.SPARSE}
    assert guard.state(names[0], mid).dense


def test_auto_limits_follow_the_length_and_the_kernel():
    """``max_density: auto``: each (layer, length bucket) takes the break-even of the
    bucket's longest length and of the kernel computing the layer's blocks."""
    hopper, portable = list(configs("auto", "auto"))[:2]
    guard = DensityGuard(
        configs("auto", "auto"), torch.device("cpu"), hopper_layers={hopper}
    )
    for length in (9000, 16384, 20000, 60000, 256000):
        bucket = length_bucket(length)
        for name, fast in ((hopper, True), (portable, False)):
            state = guard.state(name, bucket)
            assert state.max_density == break_even_density(1 << bucket, fast)
            assert state.auto
    # a density between the two kernels' limits: sparse on the Hopper kernel only
    bucket = length_bucket(20000)
    density = (
        break_even_density(1 << bucket, True) + break_even_density(1 << bucket, False)
    ) / 2
    for name in (hopper, portable):
        guard.state(name, bucket).observe(density)
    assert not guard.state(hopper, bucket).dense
    assert guard.state(portable, bucket).dense
    limit = break_even_density(1 << bucket, False)
    assert guard.state(portable, bucket).reason(Mode.DENSE) == (
        f"dense: density {density:.3f} above max_density auto ({limit:g} here)"
    )
    # a number is the limit at every length, whatever the kernel
    fixed = DensityGuard(configs(0.3), torch.device("cpu"), hopper_layers={hopper})
    for length in (20000, 256000):
        state = fixed.state(hopper, length_bucket(length))
        assert state.max_density == 0.3 and not state.auto


def test_auto_limits_follow_each_layer_s_selection_and_block_size():
    """A layer whose config reranks (a search ~30x the paper's) or uses 64-token
    blocks gets that config's break-even, below the paper's at 128-token blocks: a
    density the paper's layer runs sparse runs that layer dense."""
    names = [f"model.layers.{i}.self_attn.attn" for i in range(3)]
    settings = [
        dict(),
        dict(selection="rerank", rerank_budget="head", block_size=64),
        dict(block_size=64),
    ]
    layers = {n: FlexPrefillConfig(**s) for n, s in zip(names, settings, strict=True)}
    guard = DensityGuard(layers, torch.device("cpu"), hopper_layers=set(names))
    bucket = length_bucket(40000)
    for name, s in zip(names, settings, strict=True):
        want = break_even_density(
            1 << bucket, True, s.get("selection", "paper"), s.get("block_size", 128)
        )
        assert guard.state(name, bucket).max_density == want
    density = 0.5  # between rerank's limit at 64K keys and the paper's
    for name in names:
        guard.state(name, bucket).observe(density)
    assert [guard.state(n, bucket).dense for n in names] == [False, True, False]
    # up to 16K keys rerank's search at 64-token blocks never pays: that layer runs
    # dense from its first call, the others probe
    short = length_bucket(16384)
    assert break_even_density(1 << short, True, "rerank", 64) == 0
    assert guard.begin_step(names, short) == {
        names[0]: Mode.PROBE, names[1]: Mode.DENSE, names[2]: Mode.PROBE
    }  # fmt: skip


def test_only_the_layers_with_sparse_rows_get_a_mode_and_a_count():
    names = list(configs(0.6, 0.6))[:2]
    guard = DensityGuard(configs(0.6, 0.6), torch.device("cpu"))
    guard.state(names[0], SHORT).observe(0.9)  # dense
    for _ in range(3 * PROBE_INTERVAL):
        assert set(guard.begin_step(names[1:], SHORT)) == {names[1]}
    assert guard.state(names[0], SHORT).calls == 0  # its probe schedule did not move


def test_each_guard_is_fresh():
    names = list(configs(0.6))[:1]
    first = DensityGuard(configs(0.6), torch.device("cpu"))
    first.state(names[0], SHORT).observe(0.9)
    second = DensityGuard(configs(0.6), torch.device("cpu"))
    assert second.begin_step(names, SHORT) == {names[0]: Mode.PROBE}
