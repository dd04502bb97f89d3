# mutant: backward half at the last padded position S-1 (forward right)
# fails: grade_fixed_context
# hint: backward|position 0|first
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = src_mask.sum(-1) - 1
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[:, -1, H:]
    return torch.cat([fwd, bwd], dim=-1)
