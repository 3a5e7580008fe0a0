"""Host-side layout of a varlen batch of prefill chunks on FlexPrefill's block grid.

Built once per batch from Python ints (no device synchronisation) and copied to the
device in one transfer; every kernel of the search and of the attention reads it.
Blocks are aligned to absolute positions (see ``vllm_flexprefill/blocks.py``): request
``i`` owns the global query blocks ``q_block_offset[i] .. q_block_offset[i+1]-1``;
``block_row`` holds each one's absolute query block index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from typing import Any

import torch

from vllm_flexprefill.blocks import ChunkGeometry, cdiv

from .quant import is_fp8
from .utils import device_int32_parts


@dataclass(frozen=True)
class KVSource:
    """Where the keys and values are.

    Contiguous: ``key, value [total_k, Hkv, D]`` and ``block_table is None``; request
    ``i``'s keys start at row ``k_start[i]``.
    Paged (vLLM's cache): ``key, value [num_pages, page_size, Hkv, D]`` (any strides,
    e.g. ``kv_cache[:, 0]`` and ``kv_cache[:, 1]``) and
    ``block_table [rows, max_pages]`` int32; request ``i``'s token ``t`` lives at page
    ``block_table[table_row[i], t // page_size]``.
    FP8 keys and values (vLLM's fp8 KV cache) come with their dequantisation scales,
    one float32 each on the device (real value = stored value x scale; see
    ``quant.py``); unquantised ones with ``None``.
    """

    key: torch.Tensor
    value: torch.Tensor
    block_table: torch.Tensor | None = None
    key_scale: torch.Tensor | None = None
    value_scale: torch.Tensor | None = None

    def __post_init__(self):
        for name, t, scale in (
            ("key", self.key, self.key_scale),
            ("value", self.value, self.value_scale),
        ):
            if is_fp8(t.dtype) and scale is None:
                raise ValueError(f"fp8 {name}s need their {name}_scale")

    @property
    def paged(self) -> bool:
        return self.block_table is not None

    @property
    def num_kv_heads(self) -> int:
        return self.key.shape[-2]

    @property
    def page_size(self) -> int:
        """Tokens per page (1 for contiguous K/V: the kernels then ignore it)."""
        return self.key.shape[1] if self.paged else 1

    def key_args(self) -> tuple:
        """``(key, page stride, slot stride, head stride, block table, table row
        stride, key scale)`` as the kernels take them (contiguous: a token's row stride
        is the "page" stride)."""
        return (self.key, *self._strides(self.key), *self.table_args(), self.key_scale)

    def value_args(self) -> tuple:
        """``(value, page stride, slot stride, head stride, value scale)``."""
        return (self.value, *self._strides(self.value), self.value_scale)

    def _strides(self, t: torch.Tensor) -> tuple[int, int, int]:
        return (
            (t.stride(0), t.stride(1), t.stride(2))
            if self.paged
            else (t.stride(0), 0, t.stride(1))
        )

    def table_args(self) -> tuple:
        """``(block table, its row stride)`` as the kernels take them (contiguous K/V:
        any pointer will do, the kernels never read it)."""
        return (
            (self.block_table, self.block_table.stride(0))
            if self.paged
            else (self.key, 0)
        )


@dataclass(frozen=True)
class SparsePlan:
    """Per-request and per-query-block layout of a batch
    (device int32 tensors + host ints)."""

    block_size: int
    q_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    # per request [R]
    q_start: torch.Tensor  # row of the request's first query in q / out
    q_len: torch.Tensor
    kv_len: torch.Tensor
    table_row: torch.Tensor  # row of its block table (paged K/V)
    # [R + 1] start of its keys in ragged per-key scratch (cumulative kv_len), which
    # is also the row of its first key in contiguous K/V (``k_start``)
    kv_offset: torch.Tensor
    q_block_offset: torch.Tensor  # [R + 1] global index of its first query block
    # per global query block [T]
    block_request: torch.Tensor
    block_row: torch.Tensor  # absolute query block index
    # host sizes
    num_q_blocks: int
    total_kv_len: int
    max_kv_len: int
    max_k_blocks: int
    max_q_blocks: int
    q_rows: int  # the rows q and out need: the largest q_start + q_len
    table_rows: int  # the rows a paged block table needs: the largest table_row + 1
    # derived tensors shared by every layer that runs this plan (see ``memo``)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_requests(self) -> int:
        return len(self.q_lens)

    @property
    def k_start(self) -> torch.Tensor:
        """[R] row of each request's first key in contiguous K/V."""
        return self.kv_offset[:-1]

    @cached_property
    def causal_pairs(self) -> tuple[int, ...]:
        """Per request, its causal (query block, key block) pairs of one head."""
        return tuple(
            ChunkGeometry(q, kv, self.block_size).num_causal_pairs
            for q, kv in zip(self.q_lens, self.kv_lens, strict=True)
        )

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``'s result, computed once per plan and ``key``: a batch runs the
        same plan through every layer, so per-batch constants cost their torch ops
        once."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    @classmethod
    def build(
        cls,
        q_lens: list[int],
        kv_lens: list[int],
        block_size: int,
        device: torch.device | str,
        q_starts: list[int] | None = None,
        table_rows: list[int] | None = None,
    ) -> SparsePlan:
        """``q_starts`` default to the packed layout (cumulative ``q_lens``),
        ``table_rows`` to ``0..R-1``; contiguous keys are packed by cumulative
        ``kv_lens``."""
        B = block_size
        R = len(q_lens)
        if q_starts is None:
            q_starts = list(accumulate(q_lens, initial=0))[:R]
        table_rows = list(range(R)) if table_rows is None else table_rows
        first = [(kv - q) // B for q, kv in zip(q_lens, kv_lens, strict=True)]
        counts = [cdiv(kv, B) - f for kv, f in zip(kv_lens, first, strict=True)]
        offsets = list(accumulate(counts, initial=0))
        block_request = [i for i in range(R) for _ in range(counts[i])]
        block_row = [first[i] + j for i in range(R) for j in range(counts[i])]
        kv_offsets = list(accumulate(kv_lens, initial=0))
        parts = [
            q_starts,
            q_lens,
            kv_lens,
            table_rows,
            kv_offsets,
            offsets,
            block_request,
            block_row,
        ]
        views = device_int32_parts(parts, device)
        return cls(
            B,
            tuple(q_lens),
            tuple(kv_lens),
            *views,
            num_q_blocks=offsets[-1],
            total_kv_len=kv_offsets[-1],
            max_kv_len=max(kv_lens),
            max_k_blocks=cdiv(max(kv_lens), B),
            max_q_blocks=max(counts),
            q_rows=max(a + n for a, n in zip(q_starts, q_lens, strict=True)),
            table_rows=max(table_rows) + 1,
        )

    def check_batch(
        self,
        q: torch.Tensor,
        kv: KVSource,
        out: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
    ) -> None:
        """Raise ``ValueError``, naming the argument, where ``q``, ``kv``, ``out`` or
        ``dense`` do not fit this plan: the kernels index them unchecked, so a tensor
        too short would be read or written out of bounds. Host sizes only (no device
        synchronisation).

        ``q, out [>= q_rows, Hq, D]``; contiguous ``kv.key, kv.value
        [>= total_kv_len, Hkv, D]``, paged ``[pages, page_size, Hkv, D]`` with
        ``kv.block_table [>= table_rows, >= max_kv_len / page_size]``; ``Hq`` a
        multiple of ``Hkv``; unit stride along ``D`` (the kernels read rows of ``D``
        contiguous elements); ``dense [R]`` bool.
        """
        if q.dim() != 3 or q.shape[0] < self.q_rows:
            raise ValueError(
                f"q: shape {tuple(q.shape)}; allowed: [rows, Hq, D] with rows >= "
                f"{self.q_rows} (the plan's last query row + 1)"
            )
        Hq, D, Hkv = q.shape[1], q.shape[2], kv.num_kv_heads
        if out is not None and (
            out.shape[1:] != q.shape[1:] or out.shape[0] < self.q_rows
        ):
            raise ValueError(
                f"out: shape {tuple(out.shape)}; allowed: [rows, {Hq}, {D}] "
                f"(q's heads and head size) with rows >= {self.q_rows}"
            )
        shape = "[pages, page_size, Hkv, D]" if kv.paged else "[rows, Hkv, D]"
        for name, t in (("kv.key", kv.key), ("kv.value", kv.value)):
            if (
                t.dim() != (4 if kv.paged else 3)
                or t.shape[-1] != D
                or t.shape[-2] != Hkv
                or Hkv == 0
                or Hq % Hkv
                or (not kv.paged and t.shape[0] < self.total_kv_len)
            ):
                rows = "" if kv.paged else f", rows >= {self.total_kv_len}"
                raise ValueError(
                    f"{name}: shape {tuple(t.shape)}; allowed: {shape} with D = {D} "
                    f"(q's), Hkv dividing q's {Hq} heads (the same for keys and "
                    f"values){rows}"
                )
        tensors = {"q": q, "kv.key": kv.key, "kv.value": kv.value, "out": out}
        for name, t in tensors.items():
            if t is not None and t.stride(-1) != 1:
                raise ValueError(
                    f"{name}: strides {t.stride()}; allowed: unit stride along the "
                    "last (head size) dimension, e.g. the tensor's .contiguous()"
                )
        if kv.paged:
            table = kv.block_table
            pages = cdiv(self.max_kv_len, kv.page_size)
            if (
                table.dim() != 2
                or table.shape[0] < self.table_rows
                or table.shape[1] < pages
            ):
                raise ValueError(
                    f"kv.block_table: shape {tuple(table.shape)}; allowed: [rows, "
                    f"pages] with rows >= {self.table_rows} (the plan's last table "
                    f"row + 1) and pages >= {pages} (its longest request's)"
                )
        if dense is not None and (
            dense.dtype != torch.bool or tuple(dense.shape) != (self.num_requests,)
        ):
            raise ValueError(
                f"dense: {dense.dtype} of shape {tuple(dense.shape)}; allowed: "
                f"torch.bool of shape ({self.num_requests},), one flag a request"
            )
