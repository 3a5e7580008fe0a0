"""The Prometheus metrics: what a builder and its density guard count, the snapshots
they write, and the series the API server's collector serves from them."""

import os
import subprocess
import sys
import time

import pytest
import torch
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import vllm_flexprefill  # noqa: F401  (the plugin installs the collector)
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import metrics as metrics_module
from vllm_flexprefill.guard import DensityGuard, Mode
from vllm_flexprefill.metrics import (
    METRICS_ENV,
    BuilderMetrics,
    SnapshotCollector,
    read_snapshots,
)
from vllm_flexprefill.selection import Pattern


def scrape(directory) -> dict[str, float]:
    """``{series with labels: value}`` of the collector over ``directory``."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(directory))
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in lines if line[0] != "#")
    }


def test_the_collector_sums_every_builders_snapshot(tmp_path):
    first, second = BuilderMetrics(tmp_path), BuilderMetrics(tmp_path)
    first.count_prefill(sparse_tokens=32768, dense_tokens=1000)
    second.count_prefill(sparse_tokens=16384, dense_tokens=24)
    for mode in ("sparse", "sparse", "probe"):
        first.count_call(mode)
    second.count_call("dense")
    first.observe_density("model.layers.0.self_attn.attn", 0.08, smoothed=0.08)
    second.observe_density("model.layers.0.self_attn.attn", 0.75, smoothed=0.7)
    second.count_decision(dense=True)
    second.set_dense_layers(3)
    first.count_patterns([20, 12, 0])
    for metrics in (first, second):
        metrics.maybe_write(now=10.0)
    assert len(read_snapshots(tmp_path)) == 2
    series = scrape(tmp_path)
    assert series['vllm_flexprefill_prefill_tokens_total{path="sparse"}'] == 49152
    assert series['vllm_flexprefill_prefill_tokens_total{path="dense"}'] == 1024
    assert series['vllm_flexprefill_layer_calls_total{mode="sparse"}'] == 2
    assert series['vllm_flexprefill_layer_calls_total{mode="probe"}'] == 1
    assert series['vllm_flexprefill_layer_calls_total{mode="dense"}'] == 1
    assert series['vllm_flexprefill_guard_decisions_total{to="dense"}'] == 1
    assert series['vllm_flexprefill_head_patterns_total{pattern="query_aware"}'] == 12
    # the histogram: 0.08 under 0.1, 0.75 under 0.8
    assert series['vllm_flexprefill_selected_density_bucket{le="0.05"}'] == 0
    assert series['vllm_flexprefill_selected_density_bucket{le="0.1"}'] == 1
    assert series['vllm_flexprefill_selected_density_bucket{le="0.7"}'] == 1
    assert series['vllm_flexprefill_selected_density_bucket{le="0.8"}'] == 2
    assert series['vllm_flexprefill_selected_density_bucket{le="+Inf"}'] == 2
    assert series["vllm_flexprefill_selected_density_count"] == 2
    assert series["vllm_flexprefill_selected_density_sum"] == pytest.approx(0.83)
    assert series["vllm_flexprefill_dense_layers"] == 3
    # one series per layer, the builders' mean (tensor-parallel ranks share layers)
    layer = (
        'vllm_flexprefill_layer_selected_density{layer="model.layers.0.self_attn.attn"}'
    )
    assert series[layer] == pytest.approx((0.08 + 0.7) / 2)


def test_an_engines_tensor_parallel_ranks_count_its_steps_once(tmp_path):
    """Two ranks of one engine see the same steps and layer calls, each selecting for
    its own half of the heads; a second engine without tensor parallelism beside
    them."""
    ranks = [BuilderMetrics(tmp_path, ranks=2) for _ in range(2)]
    single = BuilderMetrics(tmp_path)
    for metrics, dense_layers in zip([*ranks, single], (2, 4, 1), strict=True):
        metrics.count_prefill(sparse_tokens=32768, dense_tokens=0)
        metrics.count_call("sparse")
        metrics.observe_density("model.layers.0.self_attn.attn", 0.1, smoothed=0.1)
        metrics.count_patterns([16, 0, 0])
        metrics.set_dense_layers(dense_layers)
        metrics.maybe_write(now=1.0)
    series = scrape(tmp_path)
    assert series['vllm_flexprefill_prefill_tokens_total{path="sparse"}'] == 65536
    assert series['vllm_flexprefill_layer_calls_total{mode="sparse"}'] == 2
    assert series["vllm_flexprefill_selected_density_count"] == 2
    assert series["vllm_flexprefill_dense_layers"] == 3 + 1  # the ranks' mean, plus 1
    # every rank's heads: 2 x 16 (the ranks') + 16
    pattern = 'vllm_flexprefill_head_patterns_total{pattern="vertical_slash"}'
    assert series[pattern] == 48


def test_snapshots_are_written_once_a_second_and_empty_directories_serve_nothing(
    tmp_path,
):
    assert scrape(tmp_path) == {}
    metrics = BuilderMetrics(tmp_path)
    metrics.count_prefill(100, 0)
    metrics.maybe_write(now=5.0)
    metrics.count_prefill(100, 0)
    metrics.maybe_write(now=5.5)  # too soon: the file still says 100
    assert read_snapshots(tmp_path)[0].prefill_tokens["sparse"] == 100
    metrics.maybe_write(now=6.0)
    assert read_snapshots(tmp_path)[0].prefill_tokens["sparse"] == 200
    # without a directory, nothing is written
    BuilderMetrics(None).maybe_write(now=100.0)


def test_counts_held_back_by_the_interval_are_written_when_it_ends(
    tmp_path, monkeypatch
):
    """A server that goes idle right after a step still shows that step: a write due
    too soon after the last one is made when the interval ends, without another
    step; after removal (the process's exit) nothing is written again."""
    monkeypatch.setattr(metrics_module, "WRITE_INTERVAL_S", 0.2)
    metrics = BuilderMetrics(tmp_path)
    metrics.count_prefill(100, 0)
    metrics.maybe_write()
    metrics.count_prefill(100, 0)
    metrics.maybe_write()  # too soon: held back
    assert read_snapshots(tmp_path)[0].prefill_tokens["sparse"] == 100
    deadline = time.monotonic() + 5
    while read_snapshots(tmp_path)[0].prefill_tokens["sparse"] != 200:
        assert time.monotonic() < deadline, "the held-back write never came"
        time.sleep(0.05)
    metrics.count_prefill(100, 0)
    metrics.maybe_write()  # held back again, then the process exits
    metrics.remove()
    time.sleep(0.4)
    assert read_snapshots(tmp_path) == []


def test_a_stopped_servers_snapshots_are_not_counted(tmp_path):
    """Servers started one after another from one process share the directory: the
    snapshots of builders whose process has exited are skipped."""
    stopped = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    live = BuilderMetrics(tmp_path)
    live.count_prefill(100, 0)
    live.maybe_write(now=1.0)
    dead = tmp_path / f"{stopped.stdout.strip()}-1.json"
    dead.write_text(live.path.read_text().replace("100", "5000"))
    other = tmp_path / "notes.json"  # not a snapshot: left alone
    other.write_text("{}")
    assert (
        scrape(tmp_path)['vllm_flexprefill_prefill_tokens_total{path="sparse"}'] == 100
    )
    assert not dead.exists() and other.exists()
    # a builder deletes its own snapshot at its process's exit
    snapshot = live.path
    live.remove()
    assert not snapshot.exists() and other.exists()


def test_the_guard_feeds_modes_densities_decisions_and_patterns(tmp_path):
    names = ["model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn"]
    metrics = BuilderMetrics(tmp_path)
    guard = DensityGuard(
        dict.fromkeys(names, FlexPrefillConfig(max_density=0.6)),
        torch.device("cpu"),
        metrics,
    )
    vertical_slash, query_aware = Pattern.VERTICAL_SLASH, Pattern.QUERY_AWARE
    patterns = torch.tensor([[vertical_slash, query_aware, vertical_slash]])
    bucket = 15  # 16K-32K keys
    for _ in range(2):  # two steps of probes; the first's densities arrive at step 3
        assert guard.begin_step(names, bucket) == dict.fromkeys(names, Mode.PROBE)
        guard.record(names[0], bucket, torch.tensor([[90]]), 100, patterns)  # 0.9
        guard.record(names[1], bucket, torch.tensor([[10]]), 100, patterns)  # 0.1
    guard.begin_step(names, bucket)
    counts = metrics.counts
    assert counts.layer_calls == {"sparse": 1, "probe": 4, "dense": 1}
    assert counts.guard_decisions == {"dense": 1, "sparse": 1}
    assert counts.dense_layers == 1
    assert counts.layer_density == {names[0]: 0.9, names[1]: 0.1}
    assert counts.head_patterns == {"vertical_slash": 4, "query_aware": 2, "dense": 0}
    assert sum(counts.density_buckets) == 2


def test_an_unwritable_directory_stops_the_snapshots_not_the_engine(tmp_path, caplog):
    """A file where the directory should be (or a directory of another user's, or a
    full disk): one warning, then no more writes; the builder's counts go on."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    metrics = BuilderMetrics(blocked / "metrics")
    metrics.count_prefill(100, 0)
    with caplog.at_level("WARNING"):
        metrics.maybe_write(now=5.0)
        metrics.maybe_write(now=7.0)
    warnings = [r for r in caplog.records if "cannot write the metrics" in r.message]
    assert len(warnings) == 1 and METRICS_ENV in warnings[0].getMessage()
    metrics.count_prefill(100, 0)
    assert metrics.counts.prefill_tokens["sparse"] == 200
    metrics.remove()  # at exit: nothing to delete


def test_the_plugin_installs_the_collector_and_the_snapshot_directory():
    assert os.environ[METRICS_ENV]  # inherited by the engine processes
    collectors = list(REGISTRY._collector_to_names)
    assert any(isinstance(c, SnapshotCollector) for c in collectors)
