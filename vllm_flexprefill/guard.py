"""The density guard of the vLLM backend: a layer whose selections keep too many blocks
runs FlashAttention instead, so a diffuse model or layer never pays for sparsity.

A sparse layer call pays the search, then computes each selected block no faster than
FlashAttention computes a dense one; above some share of the causal blocks it loses
(``break_even.py``; ``benchmarks/RESULTS.md``, "Break-even"). The search tells the
density only on the device, and the serving path never waits for the device, so the
guard decides per layer from the densities of earlier calls, read back
asynchronously:

* every call that searches adds its selected and its causal block counts (and its
  heads' pattern counts, for the metrics) into device counters (one row per layer and
  key-length bucket, below), each times a device flag that is 0 for vLLM's dummy
  batches (warm-up, capture: their block tables hold only the null page), so those
  teach the guard nothing;
* the builder of a later step queues a copy of the device counters into pinned host
  memory, behind the layers that wrote them, and records an event; a still later
  builder finds the event complete (``Event.query``, which never blocks) and folds
  each layer's density into its :class:`LayerGuard`.

A layer keeps one such state per key-length bucket (powers of two: lengths in
``(2**(b-1), 2**b]`` share bucket ``b``; a batch is bucketed by its longest sparse
request): a fixed budget is most of a short context's blocks and a small share of a
long one's, so a short prompt's density never sends a long one dense. The converse
holds: the selected share of the blocks falls with the length (for a fixed budget, and
for gamma's coverage as attention spreads over quadratically many blocks), so a new
bucket whose nearest measured shorter bucket runs sparse starts sparse, on that
density, until its own arrives; after a dense one it probes.

Each layer call with sparse rows then runs in one of three modes:

* ``SPARSE``: search and block-sparse attention;
* ``DENSE``: FlashAttention over the whole batch, no search;
* ``PROBE``: the search, to measure, then FlashAttention: a layer not measured yet
  (an engine's first long prefills) and, every ``PROBE_INTERVAL`` calls, a dense
  layer, so that it can go back to sparse when its selections thin out.

A layer enters ``DENSE`` when its smoothed density exceeds its limit at the bucket's
longest length (``FlexPrefillConfig.density_limit``: ``max_density``, or with ``auto``
the measured break-even of ``break_even.py``, which never falls with the length, so a
sparse shorter bucket's density is a safe start) and leaves it below
``RETURN_FRACTION`` of it (the hysteresis keeps a layer near the crossover from
flapping). ``max_density`` 1 turns the guard off for a layer (always sparse); a
limit of 0 (``auto`` where the layer's config never pays, e.g. rerank's search at
64-token blocks up to 16K keys) runs it dense from its first call, without probes. The
state lives in the metadata builder, so each engine starts afresh. Its decisions and
readings feed the builder's metrics (``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

import torch
from vllm.logger import init_logger

from .config import FlexPrefillConfig
from .metrics import BuilderMetrics
from .selection import Pattern

logger = init_logger(f"vllm.{__name__}")  # under vLLM's configured "vllm" logger

# A dense layer leaves DENSE when its density falls below this fraction of its limit.
RETURN_FRACTION = 0.9
# A dense layer probes once per this many of its calls with sparse rows.
PROBE_INTERVAL = 16
# Weight of the newest measurement in a layer's smoothed density.
SMOOTHING = 0.5
# Key-length buckets: every length below 2**31 has one.
LENGTH_BUCKETS = 32


def length_bucket(kv_len: int) -> int:
    """The guard's bucket of a batch whose longest sparse request has ``kv_len`` keys:
    ``b`` for lengths in ``(2**(b-1), 2**b]``."""
    return max(kv_len - 1, 0).bit_length()


def bucket_lengths(bucket: int) -> str:
    """The key lengths of ``bucket``, for messages."""
    return f"{(1 << bucket - 1) + 1 if bucket else 1}-{1 << bucket}"


class Mode(Enum):
    """How a layer call with sparse rows runs."""

    SPARSE = "sparse"  # search + block-sparse attention
    PROBE = "probe"  # search (to measure) + FlashAttention
    DENSE = "dense"  # FlashAttention only


@dataclass
class LayerGuard:
    """One layer's routing state: its smoothed selected density and whether it runs
    dense."""

    max_density: float  # the layer's limit at this key length
    probe_offset: int = 0  # staggers the layers' probes over the interval
    auto: bool = False  # the limit is max_density auto's break-even
    density: float | None = None  # None: not measured yet
    dense: bool = False
    inherited: bool = False  # density is a shorter length's, not measured here yet
    calls: int = 0  # calls with sparse rows since the layer went dense

    def __post_init__(self):
        self.dense = self.dense or self.never_sparse

    @property
    def never_sparse(self) -> bool:
        """A limit of 0: the sparse path never pays here, and no density could bring
        the layer back (dense from its first call, no probes)."""
        return self.max_density <= 0

    def mode(self) -> Mode:
        """This call's mode (counts the call)."""
        if self.max_density >= 1:
            return Mode.SPARSE
        if self.never_sparse:
            return Mode.DENSE
        if self.density is None:
            return Mode.PROBE
        if not self.dense:
            return Mode.SPARSE
        self.calls += 1
        due = (self.calls + self.probe_offset) % PROBE_INTERVAL == 0
        return Mode.PROBE if due else Mode.DENSE

    def observe(self, density: float) -> bool:
        """Fold in the density of some finished calls; True if the layer's routing
        was decided anew: its first measurement, or a switch between sparse and
        dense."""
        first = self.density is None or self.inherited
        self.density = (
            density if first else (1 - SMOOTHING) * self.density + SMOOTHING * density
        )
        self.inherited = False
        dense = (
            self.density >= RETURN_FRACTION * self.max_density
            if self.dense
            else self.density > self.max_density
        )
        switched, self.dense = dense != self.dense, dense
        if switched:
            self.calls = 0
        return first or switched

    def reason(self, mode: Mode) -> str:
        """Why a call ran in ``mode``, for the statistics file."""
        limit = (
            f"max_density auto ({self.max_density:g} here)"
            if self.auto
            else f"max_density {self.max_density:g}"
        )
        if self.never_sparse:
            return f"dense: the sparse path never pays at this length ({limit})"
        if self.density is None:
            return (
                "sparse: guard off (max_density 1)"
                if mode is Mode.SPARSE
                else "probe: density not measured yet"
            )
        measured = f"density {self.density:.3f}"
        if self.inherited:
            return f"sparse: {measured} at shorter lengths <= {limit}, not yet measured"
        if mode is Mode.SPARSE:
            return f"sparse: {measured} <= {limit}"
        if mode is Mode.DENSE:
            return f"dense: {measured} above {limit}"
        return f"probe: re-measuring a dense layer ({measured} above {limit})"


class DensityGuard:
    """The guard of one metadata builder's layers (see the module docstring).

    ``configs`` maps each layer name to its settings (None: a layer that always runs
    dense, not guarded); ``device`` holds the counters; ``metrics`` receives the
    modes, densities, switches and head patterns; ``hopper_layers``: the layers whose
    blocks the Hopper attention kernel computes (``max_density: auto``'s break-even
    depends on it)."""

    def __init__(
        self,
        configs: dict[str, FlexPrefillConfig | None],
        device: torch.device,
        metrics: BuilderMetrics | None = None,
        hopper_layers: Collection[str] = (),
    ):
        guarded = [name for name, config in configs.items() if config is not None]
        self.slot = {name: i for i, name in enumerate(guarded)}
        self.configs = {name: configs[name] for name in guarded}
        self.hopper_layers = frozenset(hopper_layers)
        # (layer, length bucket) -> its state, made at the bucket's first call
        self.states: dict[tuple[str, int], LayerGuard] = {}
        # per (layer, length bucket) since the last readback: selected and causal
        # block pairs (all heads), then the (request, head) selections per Pattern code
        self.counts = torch.zeros(
            len(guarded), LENGTH_BUCKETS, 2 + len(Pattern), dtype=torch.int64,
            device=device,
        )  # fmt: skip
        # whether a call recorded since the last readback was queued
        self._recorded = False
        self.metrics = metrics
        self._codes = torch.tensor([p.value for p in Pattern], device=device)
        cuda = device.type == "cuda"
        self._host = torch.zeros(self.counts.shape, dtype=torch.int64, pin_memory=cuda)
        self._event = torch.cuda.Event() if cuda else None
        self._pending = False  # a readback is queued

    def state(self, layer: str, bucket: int) -> LayerGuard:
        """``layer``'s routing state at key-length ``bucket``."""
        key = (layer, bucket)
        if key not in self.states:
            offset = self.slot[layer] % PROBE_INTERVAL  # staggers the layers' probes
            config = self.configs[layer]
            hopper = layer in self.hopper_layers
            limit = config.density_limit(1 << bucket, hopper)
            state = LayerGuard(limit, offset, auto=config.max_density == "auto")
            shorter = self._nearest_shorter(layer, bucket)
            if shorter is not None and not shorter.dense:
                state.density, state.inherited = shorter.density, True
            self.states[key] = state
        return self.states[key]

    def _nearest_shorter(self, layer: str, bucket: int) -> LayerGuard | None:
        """``layer``'s state at the longest bucket below ``bucket`` that has a
        density, if any."""
        for shorter in range(bucket - 1, -1, -1):
            state = self.states.get((layer, shorter))
            if state is not None and state.density is not None:
                return state
        return None

    def begin_step(self, layers: list[str], bucket: int) -> dict[str, Mode]:
        """Called by the builder for a batch with sparse rows in ``layers`` whose
        longest sparse request falls in key-length ``bucket``: takes in a completed
        readback, queues the next, and returns each layer's mode."""
        self.settle()
        fresh = [name for name in layers if (name, bucket) not in self.states]
        modes = {name: self.state(name, bucket).mode() for name in layers}
        never = [n for n in fresh if self.states[(n, bucket)].never_sparse]
        if never:
            logger.info(
                "FlexPrefill guard: %d layer(s) run dense at %s keys, where their "
                "config's sparse path never pays (max_density auto): %s",
                len(never),
                bucket_lengths(bucket),
                ", ".join(never),
            )
        if self.metrics is not None:
            for mode in modes.values():
                self.metrics.count_call(mode.value)
            states = (self.states.get((name, bucket)) for name in self.slot)
            self.metrics.set_dense_layers(sum(s.dense for s in states if s is not None))
        return modes

    def settle(self) -> None:
        """Take in a completed readback and queue the next: called at every step,
        so the densities of the last sparse steps reach the guard and the metrics
        while the following steps decode. Never inside a CUDA graph's capture."""
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return
        self._collect()
        self._queue_readback()

    def record(
        self,
        layer: str,
        bucket: int,
        kv_count: torch.Tensor,
        causal_pairs: int,
        pattern: torch.Tensor | None = None,
        live: torch.Tensor | None = None,
    ) -> None:
        """Account one searched call of ``layer`` in key-length ``bucket``:
        ``kv_count`` the search's per (head, query block) counts, ``causal_pairs`` its
        causal block pairs (all heads), ``pattern`` its ``[R, Hq]`` Pattern codes,
        ``live`` a 0-d device bool, False for a dummy batch (:func:`live_batch`; None:
        a real one). Queues device work only."""
        slot = self.slot[layer]
        weight = 1 if live is None else live.long()
        self.counts[slot, bucket, 0] += kv_count.sum(dtype=torch.int64) * weight
        self.counts[slot, bucket, 1] += causal_pairs * weight
        if pattern is not None:
            self.counts[slot, bucket, 2:] += (
                pattern.reshape(-1, 1) == self._codes
            ).sum(0) * weight
        self._recorded = True

    def _queue_readback(self) -> None:
        if self._pending or not self._recorded:
            return
        self._host.copy_(self.counts, non_blocking=True)
        self.counts.zero_()
        if self._event is not None:
            self._event.record()
        self._pending, self._recorded = True, False

    def _collect(self) -> None:
        if not self._pending or (self._event is not None and not self._event.query()):
            return
        host = self._host.tolist()
        decided = []
        for name, slot in self.slot.items():
            for bucket, (selected, pairs, *patterns) in enumerate(host[slot]):
                if not pairs:  # no call, or dummy batches only
                    continue
                state = self.state(name, bucket)
                density = selected / pairs
                if state.observe(density):
                    decided.append((name, bucket))
                if self.metrics is not None:
                    self.metrics.observe_density(name, density, state.density)
                    self.metrics.count_patterns(patterns)
        self._pending = False
        # one log line per (length bucket, new routing)
        switched: dict[tuple[int, bool], list[str]] = {}
        for name, bucket in decided:
            dense = self.states[(name, bucket)].dense
            switched.setdefault((bucket, dense), []).append(name)
            if self.metrics is not None:
                self.metrics.count_decision(dense)
        for (bucket, dense), names in sorted(switched.items()):
            logger.info(
                "FlexPrefill guard: %d layer(s) now run %s at %s keys "
                "(selected density %s max_density): %s",
                len(names),
                "dense" if dense else "sparse",
                bucket_lengths(bucket),
                "above" if dense else "within",
                ", ".join(names),
            )


def live_batch(block_table: torch.Tensor, row: int) -> torch.Tensor:
    """0-d device bool: whether the batch is vLLM's own (``row`` one of its requests'
    rows of ``block_table``), not a dummy batch of its warm-up or graph capture, whose
    block tables hold only the null page, 0, which no request's keys ever use."""
    return block_table[row, 0] != 0
