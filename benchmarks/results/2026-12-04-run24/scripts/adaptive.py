"""Candidate selection (issue 14, CPU only): per head and segment of the chunk, the
paper's selection where it holds up, vsgrid's elsewhere.

vsgrid's segment probes give, at one query block of each segment, the exact mean
attention mass on every key block. Where the paper's selection (extrapolated from
the chunk's last block) covers at least ``need`` of that mass at the segment's probe
block, the segment's rows keep the paper's selection; otherwise they take vsgrid's.
``qa_paper``: heads the paper labels query-aware keep the paper's selection
everywhere. Modes for the 2026-12-02 harness (``harness24.py``) and ``recall_cpu.py``.
"""
import torch
from vllm_flexprefill import reference as R


def adaptive(q, k, geo, config, scale, vgamma=None, need=0.85, qa_paper=False):
    paper_mask, pats = R.search(q, k, geo, config, scale)
    vcfg = config.with_overrides(
        {"selection": "vsgrid", "gamma": vgamma or config.gamma, "min_budget": 1}
    )
    vs_mask, _ = R.vsgrid_search(q, k, geo, vcfg, scale)
    use_paper = torch.zeros(paper_mask.shape[:2], dtype=torch.bool)  # [H, nqb]
    qa = torch.tensor([p.name == "QUERY_AWARE" for p in pats])
    for first, last, _, masses in R.segment_block_masses(q, k, geo, scale):
        covered = (paper_mask[:, last] * masses).sum(-1) / masses.sum(-1)  # [H]
        ok = covered >= need
        if qa_paper:
            ok |= qa
        use_paper[:, first : last + 1] = ok[:, None]
    adaptive.paper_rows = use_paper.float().mean().item()
    return torch.where(use_paper[..., None], paper_mask, vs_mask)
