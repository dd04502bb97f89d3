# mutant: [bwd ; fwd]: halves swapped
# fails: grade_fixed_context
# hint: order|forward|first|bwd|swap
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = src_mask.sum(-1) - 1
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[:, 0, H:]
    return torch.cat([bwd, fwd], dim=-1)
