"""Run 25: FA3's own forward (vLLM's `vllm_flash_attn`, fa_version 3) as the
block-sparse engine, against our Gluon kernel on the same block lists.

FA3 takes a page table per request, not per (head, query block). So each query head
is one launch whose "requests" are its query blocks: request ``j`` is query block
``j`` (128 queries, a strided view of ``q[:, h]``), its pages are the key blocks of
``kv_index[h, j]`` (ascending, the diagonal last), and its length is ``kv_count *
128``. FA3's causal mask is bottom-right aligned, so only the last page, the
diagonal, is masked, as our kernel does. Contiguous keys are pages already (``k [n,
Hkv, D]`` viewed ``[n / 128, 128, Hkv, D]``, the head ``h // group`` sliced): no copy.
A paged cache maps each block through the request's block table (128-token pages:
one page a block; 16-token pages: eight).

Variants, each timed interleaved with ours and its output compared with ours: ``fa3``
(one launch per query head, as above; also replayed from a CUDA graph, the host's
cost of 32 launches a layer apart); ``fa3_route`` (``fa3_route.py``, the route a
backend would run: one launch over every (head, query block), heaviest lists first,
rows gathered head-major and scattered back; also from a CUDA graph, which a host
synchronisation would break), ``fa3_route_launch`` (its launch alone: FA3's own rate
on the lists) and ``fa3_route_rows`` (the route with FA3's per-row page copies). All
but the last declare ``max_seqlen_q`` one row above the block, which puts FA3 on its
TMA path for 128-token pages (see ``fa3_route.py``). Cases: 32K and 128K contiguous,
128- and 16-token pages, and a chunked prefill's last 16K queries over 128K keys.

Usage (from /tmp, R the repository): python fa3_lists_ab.py OUT
"""

import json
import os
import sys
from functools import partial

R = os.environ["R"]
sys.path.insert(0, os.path.join(R, "scripts"))
import torch  # noqa: E402
from common import (  # noqa: E402
    SCALE,
    B,
    Layer,
    attempt,
    computed_flops,
    graph_ms,
    interleaved,
    paper_config,
    planted,
    run_meta,
)

from fa3_route import fa3_block_sparse, fa3_requests  # noqa: E402

from vllm_flexprefill.kernels import KVSource, SparsePlan  # noqa: E402
from vllm_flexprefill.kernels.search import find_blocks  # noqa: E402
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention  # noqa: E402


def head_tables(kv_index, kv_count, block_table, page):
    """Per query head: its page table [NB, W * B / page] int32 and lengths [NB]."""
    device = kv_index.device
    listed = torch.arange(kv_index.shape[2], device=device) < kv_count[..., None]
    blocks = torch.where(listed, kv_index.long(), 0)  # entries past the count: unset
    if block_table is None:
        pages = blocks
    else:
        per_block = B // page
        slots = blocks[..., None] * per_block + torch.arange(per_block, device=device)
        pages = block_table[0].long()[slots.flatten(-2)]
    tables = [pages[h].to(torch.int32).contiguous() for h in range(kv_index.shape[0])]
    lengths = [
        (kv_count[h] * B).to(torch.int32).contiguous() for h in range(kv_index.shape[0])
    ]
    return tables, lengths


def fa3_lists(q, key, value, tables, lengths, scale, out, max_k, attend):
    """One ``attend`` (FA3's ``flash_attn_varlen_func``, or a stand-in with its
    semantics) per query head over its query blocks (``q [n, Hq, D]`` with n a
    multiple of 128; ``key, value [pages, page, Hkv, D]``)."""
    hq, hkv = q.shape[1], key.shape[2]
    nb = q.shape[0] // B
    cu_q = torch.arange(nb + 1, dtype=torch.int32, device=q.device) * B

    def run():
        for h in range(hq):
            g = h // (hq // hkv)
            attend(
                q[:, h : h + 1], key[:, :, g : g + 1], value[:, :, g : g + 1], B + 1,
                cu_q, max_k, seqused_k=lengths[h], block_table=tables[h],
                softmax_scale=scale, causal=True, out=out[:, h : h + 1],
            )  # fmt: skip

    return run


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def case(label, layer, n, gamma, page, chunk=None) -> dict:
    """``chunk``: only the last ``chunk`` queries (a chunked prefill's last step over
    the whole context; a multiple of B)."""
    chunk = chunk or n
    q, kv = layer.q[n - chunk :], layer.kv(page)
    plan = SparsePlan.build([chunk], [n], B, "cuda")
    dense = torch.zeros(1, dtype=torch.bool, device="cuda")
    found = find_blocks(q, kv, plan, paper_config(gamma), SCALE, dense)
    flops = computed_flops(found, q.shape[2])
    ours = torch.full_like(q, float("nan"))
    attend = partial(
        block_sparse_attention, q, kv, plan, found.kv_index, found.kv_count, SCALE, ours
    )
    if page is None:
        key = layer.k.view(n // B, B, *layer.k.shape[1:])
        value = layer.v.view(n // B, B, *layer.v.shape[1:])
        tables, lengths = head_tables(found.kv_index, found.kv_count, None, B)
    else:
        key, value = kv.key, kv.value
        tables, lengths = head_tables(
            found.kv_index, found.kv_count, kv.block_table, page
        )
    max_k = int(found.kv_count.max().item()) * B
    attend()
    fns, check = dict(ours=attend), {}
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    fa3 = partial(flash_attn_varlen_func, fa_version=3)
    try:  # one launch per query head
        theirs = torch.full_like(q, float("nan"))
        fns["fa3"] = fa3_lists(
            q, key, value, tables, lengths, SCALE, theirs, max_k, fa3
        )
        fns["fa3"]()
        torch.cuda.synchronize()
        check |= dict(rel_to_ours=rel(theirs, ours), nan=bool(theirs.isnan().any()))
    except Exception as error:
        fns.pop("fa3", None)
        check["fa3_error"] = repr(error)[:800]
    try:  # the route a backend would run (fa3_route.py): heaviest first, one launch
        pages = kv
        if page is None:  # contiguous keys as 128-token pages in order
            order = torch.arange(n // B, dtype=torch.int32, device="cuda")[None]
            pages = KVSource(key, value, order)
        routed = torch.full_like(q, float("nan"))
        one = partial(fa3, num_splits=1)
        route = partial(
            fa3_block_sparse, q, pages, plan, found.kv_index, found.kv_count, SCALE,
            routed, one,
        )  # fmt: skip
        route()
        torch.cuda.synchronize()
        nan = bool(routed.isnan().any())
        check |= dict(rel_route_to_ours=rel(routed, ours), nan_route=nan)
        fns["fa3_route"] = route
        # the same with FA3's per-row page copies (max_seqlen_q = B)
        fns["fa3_route_rows"] = partial(route, bulk_pages=False)
        # its launch alone: FA3's own rate on the lists
        requests = fa3_requests(q, pages, plan, found.kv_index, found.kv_count)
        q_rows = q[requests.rows, requests.heads].unsqueeze(1)
        out_rows = torch.empty_like(q_rows)
        fns["fa3_route_launch"] = partial(
            requests.launch, q_rows, out_rows, SCALE, one
        )
    except Exception as error:
        check["fa3_route_error"] = repr(error)[:800]
    times = interleaved(fns, rounds=4, warmup=10, rep=150)
    for name in ("fa3", "fa3_route"):  # the launches alone; a capture also shows
        if name in fns:  # that no host synchronisation happens
            times[f"{name}_graph"] = graph_ms(fns[name], warmup=10, rep=150)
    tflops = {name: flops / ms / 1e9 for name, ms in times.items() if ms}
    return dict(case=label, gamma=gamma, page=page, **check, tflops=tflops, ms=times)


def main() -> None:
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rows: list[dict] = []
    try:
        for n, cases in (
            (32768, [(0.9, None)]),
            (
                131072,
                [(0.9, None), (0.95, None), (0.9, 128), (0.9, 16), (0.9, 128, 16384)],
            ),
        ):
            q, k, v = planted(n, seed=n)
            layer = Layer(q, k, v, [n], False)
            for gamma, page, *chunk in cases:
                label = f"{n // 1024}K" + (
                    f" last {chunk[0] // 1024}K" if chunk else ""
                )
                rows += attempt(partial(case, label, layer, n, gamma, page, *chunk))
            del q, k, v, layer
            torch.cuda.empty_cache()
    finally:
        with open(os.path.join(out_dir, "fa3_lists_ab.json"), "w") as f:
            json.dump(dict(meta=run_meta(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
