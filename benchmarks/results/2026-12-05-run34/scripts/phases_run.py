"""Run 34: the Gluon attention kernel's program split into phases, in SM cycles
(``phases.py``'s instrumented copies). Per case (128K planted layer, the paper's γ from
``GAMMAS``, pages from ``PAGES``) and version (the installed kernel, and each NAME=DIR
copy of the ``kernels/`` package), one warm-up run, then one measured run: every
consumer's eight marks (cycles from its program's start) read back from its log-sum-exp
rows. Reported per version: each mark's mean over the programs' consumers; the loop's
cycles a tile (marks 4 -> 5 over ``count - 1`` tiles, programs of two tiles or more);
and the least-squares fit of a program's cycles to its output (mark 7, the mean of its
two consumers) as ``a + b x count`` (b: cycles a tile; a: a program's fixed cost);
the SM clock and how full the SMs are over the kernel's span (:func:`timeline`).
Usage (GPU machine, run 33's and this folder's scripts on PYTHONPATH):
[GAMMAS="0.9 0.95"] [PAGES="0 128 16"] python phases_run.py OUT_DIR [NAME=DIR ...]"""

import sys
import tempfile
from pathlib import Path

import torch
from ab_common import cases, instrumented_module, launch, report
from common import B
from phases import POINTS, instrumented

import vllm_flexprefill.kernels as installed_kernels


def timeline(lse: torch.Tensor) -> dict:
    """The programs' placement in time from rows 8-12 of ``lse [T, H]``: the SM clock
    (cycles a nanosecond), the kernel's span, the share of SM time the programs fill,
    and what fills the rest: the gaps between one SM's programs, and each SM's idle
    start and end."""
    T, H = lse.shape
    rows = lse.double().view(T // B, 2, B // 2, H)[:, :, POINTS : POINTS + 5, :]
    rows = rows.permute(3, 0, 1, 2).reshape(-1, 2, 5)  # [programs, consumer, row]
    duration = rows[:, :, 0].max(dim=1).values.long()
    pieces = rows[:, 0, 1:4].long()
    start = pieces[:, 0] + (pieces[:, 1] << 20) + (pieces[:, 2] << 40)
    start = start - start.min()
    end = start + duration
    sm = rows[:, 0, 4].long()
    span = end.max().item()
    gaps, heads, tails = [], [], []
    for k in sm.unique().tolist():
        order = torch.argsort(start[sm == k])
        s_k, e_k = start[sm == k][order], end[sm == k][order]
        gaps.append((s_k[1:] - e_k[:-1]).clamp(min=0))
        heads.append(s_k[0].item())
        tails.append(span - e_k.max().item())
    gaps = torch.cat(gaps).double()
    n_sm = len(heads)
    return dict(
        span_us=round(span / 1e3, 1),
        sms=n_sm,
        busy_share=round(duration.sum().item() / (span * n_sm), 4),
        gap_ns_mean=round(gaps.mean().item(), 1),
        gap_share=round(gaps.sum().item() / (span * n_sm), 4),
        head_share=round(sum(heads) / (span * n_sm), 4),
        tail_share=round(sum(tails) / (span * n_sm), 4),
    )


def summary(lse: torch.Tensor, count: torch.Tensor) -> dict:
    """The marks of ``lse [T, H]`` (consumer rows as ``phases.py`` writes them) for the
    programs' tile counts ``count [H, T / B]``."""
    T, H = lse.shape
    marks = lse.double().view(T // B, 2, B // 2, H)[:, :, :POINTS, :]
    marks = marks.permute(3, 0, 1, 2)  # [H, blocks, consumer, mark]
    n = count[:, : T // B].double()
    mean_marks = marks.mean(dim=(0, 1, 2))
    several = n >= 2
    loop = (marks[..., 5] - marks[..., 4]).mean(dim=-1)[several] / (n[several] - 1)
    total = marks[..., 7].mean(dim=-1).flatten()
    x = n.flatten()
    design = torch.stack([torch.ones_like(x), x], dim=1)
    fixed, per_tile = torch.linalg.lstsq(design, total.unsqueeze(1)).solution.flatten()
    return dict(
        marks=[round(v, 1) for v in mean_marks.tolist()],
        loop_cycles_a_tile=round(loop.mean().item(), 1),
        loop_cycles_a_tile_weighted=round(
            ((marks[..., 5] - marks[..., 4]).mean(dim=-1)[several].sum()
             / (n[several] - 1).sum()).item(), 1),
        fit_cycles_a_tile=round(per_tile.item(), 1),
        fit_cycles_a_program=round(fixed.item(), 1),
        cycles_per_pair=round((total.sum() / x.sum()).item(), 1),
        mean_count=round(x.mean().item(), 2),
        consumer_gap=round((marks[..., 0, 7] - marks[..., 1, 7]).abs().mean().item(), 1),
        clock_ghz=round(
            (marks[..., 7].max(dim=-1).values.sum()
             / lse.double().view(-1, 2, B // 2, lse.shape[1])[:, :, POINTS, :].max(dim=1)
             .values.sum()).item(), 3),
        **timeline(lse),
    )  # fmt: skip


out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
scratch = Path(tempfile.mkdtemp())
sources = {"installed": Path(installed_kernels.__file__).parent}
for spec in sys.argv[2:]:
    name, _, directory = spec.partition("=")
    sources[name] = Path(directory).resolve()
versions = {
    name: instrumented_module(f"ph_{name}", d, scratch, instrumented)
    for name, d in sources.items()
}


def rows():
    """A row a case: each version's :func:`summary`."""
    for gamma, page, q, kv, plan, found in cases():
        row = dict(gamma=gamma, page=page, pairs=found.kv_count.sum().item())
        for name, module in versions.items():
            launch(module, q, kv, plan, found)  # a warm-up, then the one read
            lse = launch(module, q, kv, plan, found)[1]
            row[name] = summary(lse, found.kv_count)
        yield row


report(rows(), out_dir / "phases.json", sys.argv[2:])
