"""CPU check of fa3_lists_ab.py's mapping, before device time is spent on it: FA3's
paged varlen semantics written out in PyTorch (request j = query block j of head h,
its keys the pages of ``tables[h][j]`` up to ``lengths[h][j]``, the causal mask
aligned bottom-right as FA2/FA3 document it: ``fa3_route_cpu_check.fa3_semantics``)
in place of FA3 in ``fa3_lists``, against block-sparse causal attention on the same
random lists, contiguous and on shuffled 128- and 16-token pages (float64).
Usage: R=REPO python fa3_lists_cpu_check.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from fa3_lists_ab import B, fa3_lists, head_tables  # noqa: E402
from fa3_route_cpu_check import fa3_semantics  # noqa: E402

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


def main() -> None:
    gen = torch.Generator().manual_seed(25)
    n, hq, hkv, d = 6 * B, 4, 2, 32
    q, k, v = (
        torch.randn(n, h, d, generator=gen, dtype=torch.float64) for h in (hq, hkv, hkv)
    )
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
        got = torch.full_like(q[rows], float("nan"))
        max_k = int(kv_count.max()) * B
        fa3_lists(
            q[rows], key, value, tables, lengths, scale, got, max_k, fa3_semantics
        )()
        err = ((got - want[rows]).norm() / want[rows].norm()).item()
        worst = max(worst, err)
        print(f"page {page}, last {chunk} queries: relative error {err:.2e}")
    assert worst < 1e-12, worst
    print("mapping ok")


if __name__ == "__main__":
    main()
