"""Prometheus metrics of the FLEXPREFILL backend, on vLLM's ``/metrics``.

The attention runs in the engine's worker processes and ``/metrics`` is served by the
API server process; vLLM's own per-step statistics that travel between them have no
room for ours (their fields are fixed). So each metadata builder keeps cumulative
counts on the host - from what the routing and the density guard already know: the
selected densities and head patterns arrive with the guard's asynchronous readback,
so nothing synchronises with the GPU - and writes a snapshot of them, at most once a
second (a timer writes what a step left unwritten when the second is up, so a server's
last steps before it goes idle are not held back until its next step), into
``$VLLM_FLEXPREFILL_METRICS_DIR`` (one JSON file per builder); in the API
server, a collector in ``prometheus_client``'s default registry, which vLLM's
``/metrics`` serves, sums the snapshots at each scrape. The plugin sets the directory
(``<tmp>/vllm_flexprefill_metrics-<uid>/<pid of the first process>``) before vLLM starts
its engine processes, which inherit it; servers started one after another by one
process share it, and the collector skips the snapshots of processes that have
exited. With several API servers
(``--api-server-count``), vLLM serves a multiprocess registry instead and these
series are not on ``/metrics``.

Series (prefix ``vllm_flexprefill_``):

* ``prefill_tokens_total{path}``: prefill tokens (rows of more queries than a decode
  row holds: one, or one plus the speculative tokens) that a step routed to
  FlexPrefill (``sparse``, on at least one layer) or FlashAttention (``dense``: short
  prompts, chunks under a block, requests that asked for dense); counted once a step,
  by the builder of the first layer that can run sparse (vLLM makes one builder per
  KV-cache group);
* ``layer_calls_total{mode}``: layer calls with sparse rows by the density guard's
  mode, ``sparse``, ``probe`` (search, then FlashAttention) or ``dense``;
* ``selected_density``: histogram of the selected density of searched layer calls, as
  the guard reads it back (per layer, the calls since its last readback);
* ``layer_selected_density{layer}``: per layer, the guard's smoothed density at the key
  length it measured last (the mean over tensor-parallel ranks and engines);
* ``dense_layers``: layers the guard runs dense at the latest batch's key length;
* ``guard_decisions_total{to}``: the guard's decisions (a layer's first measurement,
  or a switch) to run a layer ``dense`` or ``sparse``;
* ``head_patterns_total{pattern}``: (request, head) selections by pattern.

Under tensor parallelism every rank's builder sees each step and layer call (and
decides on its own heads): an engine's series are the mean of its ranks' counts,
but ``head_patterns_total`` the sum (each rank selects for its own heads).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .selection import Pattern

logger = logging.getLogger(f"vllm.{__name__}")  # under vLLM's "vllm" logger

METRICS_ENV = "VLLM_FLEXPREFILL_METRICS_DIR"
PREFIX = "vllm_flexprefill_"
DENSITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WRITE_INTERVAL_S = 1.0


def metrics_dir() -> Path | None:
    """Where the snapshots go (``$VLLM_FLEXPREFILL_METRICS_DIR``), None if unset."""
    value = os.environ.get(METRICS_ENV)
    return Path(value) if value else None


@dataclass
class Counts:
    """One builder's cumulative counts (what a snapshot holds)."""

    prefill_tokens: dict[str, int] = field(
        default_factory=lambda: {"sparse": 0, "dense": 0}
    )
    layer_calls: dict[str, int] = field(
        default_factory=lambda: {"sparse": 0, "probe": 0, "dense": 0}
    )
    # per bucket of DENSITY_BUCKETS, not cumulative
    density_buckets: list[int] = field(
        default_factory=lambda: [0] * len(DENSITY_BUCKETS)
    )
    density_sum: float = 0.0
    layer_density: dict[str, float] = field(default_factory=dict)
    dense_layers: int = 0
    guard_decisions: dict[str, int] = field(
        default_factory=lambda: {"dense": 0, "sparse": 0}
    )
    head_patterns: dict[str, int] = field(
        default_factory=lambda: {p.label: 0 for p in Pattern}
    )
    # the tensor-parallel ranks of this builder's engine: each rank sees every step
    # and layer call (its own heads' selections), so the collector takes the mean of
    # their counts, but the sum of their head patterns
    ranks: int = 1


class BuilderMetrics:
    """A metadata builder's counts and its snapshot file (``ranks``: its engine's
    tensor-parallel size)."""

    def __init__(self, directory: Path | None = None, ranks: int = 1):
        directory = directory or metrics_dir()
        self.path = (
            None if directory is None else directory / f"{os.getpid()}-{id(self)}.json"
        )
        self.counts = Counts(ranks=ranks)
        self._written = 0.0
        # the counts are written by the engine's thread or by the timer of a write
        # that was due too soon after the last one
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if self.path is not None:
            atexit.register(self.remove)

    def remove(self) -> None:
        """Delete the snapshot (at the process's exit; no write follows)."""
        with self._lock:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
                self.path = None

    def count_prefill(self, sparse_tokens: int, dense_tokens: int) -> None:
        with self._lock:
            self.counts.prefill_tokens["sparse"] += sparse_tokens
            self.counts.prefill_tokens["dense"] += dense_tokens

    def count_call(self, mode: str) -> None:
        with self._lock:
            self.counts.layer_calls[mode] += 1

    def observe_density(self, layer: str, density: float, smoothed: float) -> None:
        """A layer's density read back (``smoothed``: the guard's after it)."""
        bucket = next(
            (i for i, le in enumerate(DENSITY_BUCKETS) if density <= le),
            len(DENSITY_BUCKETS) - 1,
        )
        with self._lock:
            self.counts.density_buckets[bucket] += 1
            self.counts.density_sum += density
            self.counts.layer_density[layer] = smoothed

    def count_decision(self, dense: bool) -> None:
        with self._lock:
            self.counts.guard_decisions["dense" if dense else "sparse"] += 1

    def set_dense_layers(self, count: int) -> None:
        with self._lock:
            self.counts.dense_layers = count

    def count_patterns(self, per_pattern: list[int]) -> None:
        with self._lock:
            for pattern, n in zip(Pattern, per_pattern, strict=True):
                self.counts.head_patterns[pattern.label] += n

    def maybe_write(self, now: float | None = None) -> None:
        """Write the snapshot if the last one is a second old, else when it is (a
        timer: a server's last steps before it goes idle reach ``/metrics`` too).
        Atomically: a scrape never reads half a file."""
        now = time.monotonic() if now is None else now
        if self.path is None:
            return
        wait = self._written + WRITE_INTERVAL_S - now
        if wait <= 0:
            self._write(now)
        elif self._timer is None or not self._timer.is_alive():
            due = self._written + WRITE_INTERVAL_S  # in the caller's clock
            self._timer = threading.Timer(wait, self._write, (due,))
            self._timer.daemon = True
            self._timer.start()

    def _write(self, now: float) -> None:
        with self._lock:
            if self.path is None:
                return
            self._written = now
            text = json.dumps(asdict(self.counts))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                partial = self.path.with_suffix(".tmp")
                partial.write_text(text)
                os.replace(partial, self.path)
            except OSError as error:  # metrics never stop the engine
                logger.warning(
                    "FlexPrefill: cannot write the metrics snapshot %s (%s); this "
                    "builder's vllm_flexprefill_* series stop here (set %s to a "
                    "writable directory)",
                    self.path,
                    error,
                    METRICS_ENV,
                )
                self.path = None


def read_snapshots(directory: Path) -> list[Counts]:
    """The last snapshot of every live builder in ``directory``: snapshots of
    processes that have exited (a stopped server's, where servers share the directory;
    one killed before it could delete its own) are deleted, other files skipped."""
    found = []
    for path in sorted(directory.glob("*.json")):
        writer = _writer(path)
        if writer is None:
            continue
        if not _running(writer):
            with contextlib.suppress(OSError):  # e.g. another user's folder
                path.unlink(missing_ok=True)
            continue
        try:
            found.append(Counts(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def _writer(path: Path) -> int | None:
    """The process id in a snapshot's name (``<pid>-<builder>.json``), None if
    ``path`` is not named as one."""
    pid, dash, _ = path.name.partition("-")
    return int(pid) if dash and pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        pass
    return True


class SnapshotCollector:
    """A ``prometheus_client`` collector: the sum of the snapshots in ``directory``
    at each scrape."""

    def __init__(self, directory: Path):
        self.directory = directory

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snapshots = read_snapshots(self.directory)
        if not snapshots:
            return

        # a Counts field of label -> count: its series, help, label, and whether an
        # engine's tensor-parallel ranks count it each (their mean is the engine's)
        counters = [
            ("prefill_tokens", "Prefill tokens by attention path.", "path", True),
            (
                "layer_calls",
                "Layer calls with sparse rows by the guard's mode.",
                "mode",
                True,
            ),
            (
                "guard_decisions",
                "Density guard decisions by the mode chosen.",
                "to",
                True,
            ),
            (
                "head_patterns",
                "(request, head) selections by pattern.",
                "pattern",
                False,
            ),
        ]
        for name, doc, label, per_rank in counters:
            family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
            totals: dict[str, float] = {}
            for s in snapshots:
                share = 1 / s.ranks if per_rank else 1
                for value, n in getattr(s, name).items():
                    totals[value] = totals.get(value, 0) + n * share
            for value, n in totals.items():
                family.add_metric([value], n)
            yield family
        per_bucket = [
            sum(counts)
            for counts in zip(
                *([n / s.ranks for n in s.density_buckets] for s in snapshots),
                strict=True,
            )
        ]
        cumulative, running = [], 0
        for le, n in zip(DENSITY_BUCKETS, per_bucket, strict=True):
            running += n
            cumulative.append((f"{le:g}", running))
        cumulative.append(("+Inf", running))
        yield HistogramMetricFamily(
            PREFIX + "selected_density",
            "Selected density of searched layer calls, as read back.",
            buckets=cumulative,
            sum_value=sum(s.density_sum / s.ranks for s in snapshots),
        )
        layers = GaugeMetricFamily(
            PREFIX + "layer_selected_density",
            "Smoothed selected density per layer (the density guard's; the mean "
            "over the ranks and engines that run the layer).",
            labels=["layer"],
        )
        per_layer: dict[str, list[float]] = {}
        for s in snapshots:
            for layer, density in s.layer_density.items():
                per_layer.setdefault(layer, []).append(density)
        for layer, densities in per_layer.items():
            layers.add_metric([layer], sum(densities) / len(densities))
        yield layers
        yield GaugeMetricFamily(
            PREFIX + "dense_layers",
            "Layers the density guard runs dense now.",
            value=sum(s.dense_layers / s.ranks for s in snapshots),
        )


_installed = False


def install() -> None:
    """In every process that loads the plugin, once: the snapshot directory (the
    first process's, inherited by the engine processes it starts) and the collector
    in ``prometheus_client``'s default registry (used in the API server)."""
    global _installed
    if _installed:
        return
    _installed = True
    os.environ.setdefault(
        METRICS_ENV,
        str(
            Path(tempfile.gettempdir())
            / f"vllm_flexprefill_metrics-{os.getuid()}"
            / str(os.getpid())
        ),
    )
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # vLLM depends on it; without it there is no /metrics
        return
    REGISTRY.register(SnapshotCollector(Path(os.environ[METRICS_ENV])))
