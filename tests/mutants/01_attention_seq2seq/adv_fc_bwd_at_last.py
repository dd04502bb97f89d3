# mutant: backward half taken at the last real token instead of position 0
# fails: grade_fixed_context
# hint: backward|position 0|first
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = src_mask.sum(-1) - 1
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[torch.arange(B, device=enc_out.device), last, H:]
    return torch.cat([fwd, bwd], dim=-1)
