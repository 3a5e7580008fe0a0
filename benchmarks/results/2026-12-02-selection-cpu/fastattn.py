"""Block-sparse causal attention computing only the selected blocks (same math as
reference.block_sparse_attention, for full prefill: context_len == 0)."""
import torch
from vllm_flexprefill import reference as R


def block_sparse_attention_fast(q, k, v, mask, geo, scale):
    assert geo.context_len == 0
    dt = R.compute_dtype(q)
    L, H, D = q.shape
    B, nb = geo.block_size, geo.num_k_blocks
    pad = nb * B - L
    kk = torch.nn.functional.pad(R.expand_kv_heads(k, H).to(dt), (0, 0, 0, 0, 0, pad))
    vv = torch.nn.functional.pad(R.expand_kv_heads(v, H).to(dt), (0, 0, 0, 0, 0, pad))
    qq = torch.nn.functional.pad(q.to(dt), (0, 0, 0, 0, 0, pad))
    kb = kk.view(nb, B, H, D).permute(2, 0, 1, 3)  # [H, nb, B, D]
    vb = vv.view(nb, B, H, D).permute(2, 0, 1, 3)
    qb = qq.view(nb, B, H, D).permute(2, 0, 1, 3)
    out = torch.empty(H, nb, B, D, dtype=dt)
    tri = torch.ones(B, B, dtype=torch.bool).tril()
    hidx = torch.arange(H)[:, None]
    for r in range(nb):
        sel = mask[:, r, : r + 1].clone()
        sel[:, r] = True
        cnt = sel.sum(-1)
        n = int(cnt.max())
        # selected block indices first (stable), padded
        order = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True)[:, :n]
        valid = torch.arange(n)[None, :] < cnt[:, None]  # [H, n]
        Kg = kb[hidx, order].reshape(H, n * B, D)
        Vg = vb[hidx, order].reshape(H, n * B, D)
        lg = qb[:, r] @ Kg.transpose(1, 2) * scale  # [H, B, n*B]
        allow = valid[:, None, :, None].expand(H, B, n, B).clone()
        # the diagonal block r is causal-masked within
        isdiag = (order == r) & valid  # [H, n]
        allow &= ~(isdiag[:, None, :, None] & ~tri[None, :, None, :])
        lg = lg.masked_fill(~allow.reshape(H, B, n * B), float("-inf"))
        out[:, r] = torch.softmax(lg, -1) @ Vg
    return out.permute(1, 2, 0, 3).reshape(nb * B, H, D)[:L].to(q.dtype)
