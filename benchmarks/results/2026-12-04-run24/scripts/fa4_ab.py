"""Prepared in session 24 for the next GPU run (not run yet): issue 13's second
route, FlashAttention-4's CuTe-DSL Hopper forward with block sparsity, fed with our
search's block lists, against our Gluon kernel on the same lists.

PyPI `flash-attn-4==4.0.0b19` is the last release whose requirements vLLM 0.24's pins
satisfy (nvidia-cutlass-dsl >= 4.5.2 against the pin 4.5.2, apache-tvm-ffi >= 0.1.5
against 0.1.9, quack-kernels >= 0.5.0: `pip install --dry-run --pre
flash-attn-4==4.0.0b19` beside vLLM 0.24 adds only it); b20-b40 need nvidia-cutlass-dsl
>= 4.6. Its SM90 forward takes `block_sparse_tensors` (per batch, head and 128-row query
block: "mask" blocks, where the causal mask applies, and "full" blocks) and a
`page_table`, with 128 x 128 tiles at head dim 128 (P from registers, intra-warp-group
overlap). The GPU machine's vLLM bundle leaves nvidia-cutlass-dsl out: carry
nvidia_cutlass_dsl 4.5.2 with its libs-base and libs-cu13 wheels (74.5 + 78.8 MB:
`split-carry.sh`), quack_kernels 0.5.0, cuda_python and the flash_attn_4 wheel, and pip
install them with --no-deps --no-index.

Our lists (`SearchResult.kv_index [Hq, T, W]`, the diagonal block last, `kv_count [Hq,
T]`) map to one request's `BlockSparseTensorsTorch`: the diagonal as the one mask block,
the others as full blocks. Per case: outputs compared (relative error against ours),
timings interleaved (four rounds, order alternating), TF/s on computed blocks as
`bench_kernels.py` counts them. Usage (from /tmp, R the repository):
python fa4_ab.py OUT
"""

import json
import os
import sys
from functools import partial

R = os.environ["R"]
sys.path.insert(0, os.path.join(R, "scripts"))
import torch  # noqa: E402
from bench_kernels import Layer, computed_flops  # noqa: E402
from common import SCALE, B, bench, interleaved, paper_config, planted, run_meta  # noqa: E402
from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch  # noqa: E402
from flash_attn.cute.interface import _flash_attn_fwd  # noqa: E402

from vllm_flexprefill.kernels import SparsePlan  # noqa: E402
from vllm_flexprefill.kernels.search import find_blocks  # noqa: E402
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention  # noqa: E402


def fa4_lists(
    kv_index: torch.Tensor, kv_count: torch.Tensor
) -> BlockSparseTensorsTorch:
    """One request's lists in FA4's layout: counts [1, Hq, T], indices [1, Hq, T, W]."""
    count = kv_count.to(torch.int32)
    diagonal = kv_index.gather(2, (count - 1).clamp(min=0).long()[..., None])
    mask_idx = torch.zeros(kv_index.shape, dtype=torch.int32, device=kv_index.device)
    mask_idx[..., :1] = diagonal
    return BlockSparseTensorsTorch(
        mask_block_cnt=torch.ones_like(count)[None].contiguous(),
        mask_block_idx=mask_idx[None].contiguous(),
        full_block_cnt=(count - 1)[None].contiguous(),
        full_block_idx=kv_index.to(torch.int32)[None].contiguous(),
        block_size=(B, B),
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def case(label, layer, n, gamma, page, rows):
    q, kv = layer.q, layer.kv(page)
    plan = SparsePlan.build([n], [n], B, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    found = find_blocks(q, kv, plan, paper_config(gamma), SCALE, dense)
    flops = computed_flops(found, q.shape[2])
    ours = torch.full_like(q, float("nan"))
    attend = partial(
        block_sparse_attention, q, kv, plan, found.kv_index, found.kv_count, SCALE, ours
    )
    lists = fa4_lists(found.kv_index, found.kv_count)
    theirs = torch.full((1, *q.shape), float("nan"), dtype=q.dtype, device="cuda")
    if page is None:
        k, v, table, used = layer.k[None], layer.v[None], None, None
    else:  # [pages, page_size, Hkv, D], the request's row of the block table, and its
        # length (without it FA4 takes every page's tokens and shifts the causal diagonal)
        k, v = kv.key, kv.value
        table = kv.key_args()[4][:1].to(torch.int32).contiguous()
        used = torch.tensor([n], dtype=torch.int32, device="cuda")
    fa4 = partial(
        _flash_attn_fwd, q[None], k, v, page_table=table, softmax_scale=SCALE,
        seqused_k=used, causal=True, block_sparse_tensors=lists, pack_gqa=False,
        out=theirs,
    )  # fmt: skip
    attend()
    fa4()
    torch.cuda.synchronize()
    check = dict(rel_to_ours=rel(theirs[0], ours), nan=bool(theirs.isnan().any()))
    times = interleaved(dict(ours=attend, fa4=fa4), rounds=4, warmup=10, rep=150)
    tflops = {name: flops / ms / 1e9 for name, ms in times.items()}
    row = dict(case=label, gamma=gamma, page=page, **check, tflops=tflops, ms=times)
    print(json.dumps(row), flush=True)
    rows.append(row)


def dense(label, layer, n, rows):
    """FA4's dense causal forward against FA3's on the same layer: the rates each
    reaches on every block (flops 4 Hq D n (n + 1) / 2)."""
    q = layer.q
    out = torch.empty((1, *q.shape), dtype=q.dtype, device="cuda")
    fa4 = partial(
        _flash_attn_fwd, q[None], layer.k[None], layer.v[None], softmax_scale=SCALE,
        causal=True, pack_gqa=False, out=out,
    )  # fmt: skip
    fa4()
    times = dict(fa3=layer.fa3_ms([n]), fa4=bench(fa4))
    flops = 4 * q.shape[1] * q.shape[2] * n * (n + 1) / 2
    tflops = {name: flops / ms / 1e9 for name, ms in times.items()}
    row = dict(case=label, dense=True, tflops=tflops, ms=times)
    print(json.dumps(row), flush=True)
    rows.append(row)


def main() -> None:
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rows: list[dict] = []
    try:
        for n, gammas, pages in (
            (32768, [0.9], [None]),
            (131072, [0.9, 0.95], [None, 128]),
        ):
            q, k, v = planted(n, seed=n)
            layer = Layer(q, k, v, [n], False)
            try:
                dense(f"{n // 1024}K", layer, n, rows)
            except Exception as error:
                print(json.dumps(dict(case=n, dense=True, error=repr(error)[:500])))
            for gamma in gammas:
                for page in pages:
                    try:
                        case(f"{n // 1024}K", layer, n, gamma, page, rows)
                    except Exception as error:  # keep measuring the other cases
                        failed = dict(case=n, gamma=gamma, page=page)
                        failed["error"] = repr(error)[:500]
                        print(json.dumps(failed), flush=True)
            del q, k, v, layer
            torch.cuda.empty_cache()
    finally:
        with open(os.path.join(out_dir, "fa4_ab.json"), "w") as f:
            json.dump(dict(meta=run_meta(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
