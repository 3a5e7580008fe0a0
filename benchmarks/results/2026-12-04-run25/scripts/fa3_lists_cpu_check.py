"""CPU check of fa3_lists_ab.py's mapping, before device time is spent on it: FA3's
paged varlen semantics written out in PyTorch (request j = query block j of head h,
its keys the pages of ``tables[h][j]`` up to ``lengths[h][j]``, the causal mask
aligned bottom-right as FA2/FA3 document it) against block-sparse causal attention
on the same random lists, contiguous and on shuffled 128- and 16-token pages, and
one launch over head-major queries with the KV heads as pages (``heads_as_pages``).
Usage: R=REPO python fa3_lists_cpu_check.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from fa3_lists_ab import B, head_tables, heads_as_pages, one_launch_tables  # noqa: E402

from vllm_flexprefill.synthetic import paged_copy  # noqa: E402


def random_lists(hq: int, nb: int, density: float, gen: torch.Generator):
    """``kv_index [hq, nb, nb]`` (ascending, the diagonal last, -1 past the count) and
    ``kv_count [hq, nb]``."""
    kv_index = torch.full((hq, nb, nb), -1, dtype=torch.int32)
    kv_count = torch.zeros(hq, nb, dtype=torch.int32)
    for h in range(hq):
        for j in range(nb):
            earlier = torch.nonzero(torch.rand(j, generator=gen) < density).flatten()
            row = torch.cat([earlier, torch.tensor([j])])
            kv_index[h, j, : len(row)] = row.to(torch.int32)
            kv_count[h, j] = len(row)
    return kv_index, kv_count


def block_sparse(q, k, v, kv_index, kv_count, scale):
    """Causal attention on the listed block pairs (``q [n, Hq, D]``, ``k, v [n, Hkv,
    D]``), float64."""
    n, hq, _ = q.shape
    group = hq // k.shape[1]
    pos = torch.arange(n)
    out = torch.empty(q.shape, dtype=torch.float64)
    for h in range(hq):
        allowed = torch.zeros(n // B, n // B, dtype=torch.bool)
        for j in range(n // B):
            allowed[j, kv_index[h, j, : kv_count[h, j]].long()] = True
        mask = allowed[pos // B][:, pos // B] & (pos[None, :] <= pos[:, None])
        logits = (q[:, h].double() @ k[:, h // group].double().T) * scale
        p = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        out[:, h] = p @ v[:, h // group].double()
    return out


def fa3_semantics(q, key, value, tables, lengths, scale):
    """What one FA3 launch per head computes: request j of head h = query block j,
    keys = pages ``tables[h][j]`` concatenated, the first ``lengths[h][j]`` kept,
    query i of the block sees keys up to ``length - B + i`` (bottom-right causal)."""
    n, hq, _ = q.shape
    group = hq // key.shape[2]
    out = torch.empty(q.shape, dtype=torch.float64)
    for h in range(hq):
        g = h // group
        for j in range(n // B):
            length = int(lengths[h][j])
            pages = tables[h][j].long()
            keys = key[pages, :, g].reshape(-1, key.shape[-1])[:length].double()
            values = value[pages, :, g].reshape(-1, key.shape[-1])[:length].double()
            rows = q[j * B : (j + 1) * B, h].double()
            visible = torch.arange(length)[None, :] <= (
                length - B + torch.arange(B)[:, None]
            )
            logits = (rows @ keys.T * scale).masked_fill(~visible, float("-inf"))
            out[j * B : (j + 1) * B, h] = logits.softmax(-1) @ values
    return out


def main() -> None:
    gen = torch.Generator().manual_seed(25)
    n, hq, hkv, d = 6 * B, 4, 2, 32
    q, k, v = (torch.randn(n, h, d, generator=gen) for h in (hq, hkv, hkv))
    scale = d**-0.5
    kv_index, kv_count = random_lists(hq, n // B, 0.4, gen)
    want = block_sparse(q, k, v, kv_index, kv_count, scale)
    worst = 0.0
    for page, chunk in ((None, n), (128, n), (16, n), (128, 2 * B), (16, 3 * B)):
        # chunk: the last ``chunk`` queries only (a chunked prefill's last step)
        rows = slice(n - chunk, n)
        lists = kv_index[:, -(chunk // B) :], kv_count[:, -(chunk // B) :]
        if page is None:
            key, value = k.view(n // B, B, hkv, d), v.view(n // B, B, hkv, d)
            table_of_request = None
        else:
            kv = paged_copy(k, v, [n], page, seed=page)
            key, value, table_of_request = kv.key, kv.value, kv.block_table
        tables, lengths = head_tables(*lists, table_of_request, page or B)
        got = fa3_semantics(q[rows], key, value, tables, lengths, scale)
        err = ((got - want[rows]).norm() / want[rows].norm()).item()
        worst = max(worst, err)
        print(f"page {page}, last {chunk} queries: relative error {err:.2e}")
        # one launch: head-major queries, every KV head read through the page table
        q_hm = q[rows].transpose(0, 1).reshape(hq * chunk, 1, d)
        (k_hm, per_page), (v_hm, _) = heads_as_pages(key), heads_as_pages(value)
        table, used = one_launch_tables(
            *lists, table_of_request, page or B, per_page, hkv
        )
        got = fa3_semantics(q_hm, k_hm, v_hm, [table], [used], scale)
        got = got.view(hq, chunk, d).transpose(0, 1)
        err = ((got - want[rows]).norm() / want[rows].norm()).item()
        worst = max(worst, err)
        print(
            f"page {page}, last {chunk} queries, one launch: relative error {err:.2e}"
        )
    assert worst < 1e-12, worst
    print("mapping ok")


if __name__ == "__main__":
    main()
