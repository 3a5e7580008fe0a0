"""What run 27's lab candidates share: vsgrid's pick from a per-row estimate."""
import torch
from vllm_flexprefill import reference as R
from vllm_flexprefill.selection import LOCAL_BLOCKS


def with_sink_and_window(picked, geo):
    """``picked [H, nq, nk]`` bool plus the sink and vsgrid's local window, causal."""
    rows = torch.arange(geo.first_q_block, geo.num_k_blocks)
    cols = torch.arange(geo.num_k_blocks)
    forced = (cols[None, :] == 0) | (rows[:, None] - cols[None, :] < LOCAL_BLOCKS)
    return geo.causal_block_mask(picked.device) & (picked | forced)


def top_mass_rows(estimate, geo, config):
    """Per row the fewest blocks reaching ``config.gamma`` of ``estimate [H, nq, nk]``
    (within the config's budget limits), plus the sink and the local window."""
    low, high = config.budget_limits(geo.num_k_blocks)
    _, threshold = R.top_mass(estimate, config.gamma, at_least=low, at_most=high)
    return with_sink_and_window(estimate >= threshold[..., None], geo)
