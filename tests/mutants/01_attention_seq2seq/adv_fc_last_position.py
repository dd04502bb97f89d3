# mutant: forward half at position S-1 of the padded batch
# fails: grade_fixed_context
# hint: last real|position|S-1|padd
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = torch.full((B,), enc_out.size(1) - 1, device=enc_out.device)
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[:, 0, H:]
    return torch.cat([fwd, bwd], dim=-1)
