# mutant: last real token at src_mask.sum() (no -1): one past the end
# fails: grade_fixed_context
# hint: last real|- 1|off|position|index
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = (src_mask.sum(-1)).clamp_max(enc_out.size(1) - 1)
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[:, 0, H:]
    return torch.cat([fwd, bwd], dim=-1)
