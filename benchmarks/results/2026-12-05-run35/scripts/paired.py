"""Diagnostic (issue 14, CPU only): does top-1 need 64-token query blocks, or only 64-token
key blocks? ``paired`` runs the package's selection at ``block_size: 64`` (vsgrid or rerank,
``config.selection``) and gives both 64-token query blocks of each 128-token one the union of
their key blocks: the selection a kernel with 128-query rows and 64-key tiles could run
(the lab harness, at ``block_size=64``, computes and counts it at 64 x 64)."""
import torch
from vllm_flexprefill import reference as R


def paired(q, k, geo, config, scale):
    assert geo.block_size == 64 and geo.context_len % 128 == 0, "needs block_size=64"
    mask = R.vsgrid_search(q, k, geo, config, scale)[0]  # [H, nq, nk]
    H, nq, nk = mask.shape
    first = geo.first_q_block
    pad = (first + nq) % 2  # row pairs are absolute: (2r, 2r + 1)
    rows = torch.nn.functional.pad(mask, (0, 0, 0, pad))
    union = rows.view(H, -1, 2, nk).any(2, keepdim=True).expand(H, -1, 2, nk)
    return union.reshape(H, -1, nk)[:, :nq] & geo.causal_block_mask(q.device)
