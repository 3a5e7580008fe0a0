"""Run 38: the knock-out copies of ``kernels/`` for ``mass_knockout.py``, each with one
change to rerank's sampled-mass pass (``kernels/rerank.py``):
  sametile  every listed block read as block 0 (its tile stays cached: no tile traffic)
  nodot     the logits a tile's row sums instead of the sampled queries' products
  noexp     each block's mass a clamped sum of logits instead of their exponentials
  warps2, warps8, stages2, stages4   the launch with 2 or 8 warps, 2 or 4 stages
  pair      two listed blocks an iteration
Usage: python mass_variants.py KERNELS_DIR OUT_DIR  (writes OUT_DIR/NAME/kernels)"""

import shutil
import sys
from pathlib import Path

EDITS = {
    "sametile": [
        (
            "queries, position, tl.load(index_row + slot), k_ptr,",
            "queries, position, tl.load(index_row + slot) * 0, k_ptr,",
        )
    ],
    "nodot": [
        (
            "s = query_key_products(queries, k, DOT_PRECISION) * scale_log2",
            "s = tl.zeros([queries.shape[0], BLOCK], tl.float32)"
            " + tl.sum(k.to(tl.float32), 1)[None, :] * scale_log2",
        )
    ],
    "noexp": [
        (
            "mass = tl.sum(tl.sum(tl.exp2(s - norm[:, None]), 1), 0) / QUERIES",
            "mass = tl.sum(tl.sum(tl.maximum(s - norm[:, None], -100.0), 1), 0)",
        )
    ],
    "warps2": [
        (
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4,",
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=2,",
        )
    ],
    "warps8": [
        (
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4,",
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=8,",
        )
    ],
    "stages2": [
        (
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4,",
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4, num_stages=2,",
        )
    ],
    "stages4": [
        (
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4,",
            "DOT_PRECISION=dot_precision(q.dtype), num_warps=4, num_stages=4,",
        )
    ],
    "pair": [
        (
            """    for slot in range(n):
        s = _block_logits(
            queries, position, tl.load(index_row + slot), k_ptr, kv_h, k_start,
            table_row_ptr, stride_kp, stride_ks, scale_log2, d, d_ok,
            PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
        )  # fmt: skip
        mass = tl.sum(tl.sum(tl.exp2(s - norm[:, None]), 1), 0) / QUERIES
        tl.store(mass_row + slot, mass)""",
            """    for slot in range(0, n, 2):
        other = tl.minimum(slot + 1, n - 1)
        s = _block_logits(
            queries, position, tl.load(index_row + slot), k_ptr, kv_h, k_start,
            table_row_ptr, stride_kp, stride_ks, scale_log2, d, d_ok,
            PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
        )  # fmt: skip
        s2 = _block_logits(
            queries, position, tl.load(index_row + other), k_ptr, kv_h, k_start,
            table_row_ptr, stride_kp, stride_ks, scale_log2, d, d_ok,
            PAGED, PAGE_SIZE, BLOCK, DOT_PRECISION,
        )  # fmt: skip
        mass = tl.sum(tl.sum(tl.exp2(s - norm[:, None]), 1), 0) / QUERIES
        mass2 = tl.sum(tl.sum(tl.exp2(s2 - norm[:, None]), 1), 0) / QUERIES
        tl.store(mass_row + slot, mass)
        tl.store(mass_row + other, mass2)""",
        )
    ],
}

source, out = Path(sys.argv[1]), Path(sys.argv[2])
for name, edits in EDITS.items():
    copy = out / name / "kernels"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "rerank.py"
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"{name}: {old!r} found {text.count(old)} times")
        text = text.replace(old, new)
    path.write_text(text)
    print(name, "->", copy)
