# mutant: [bwd ; fwd] instead of [fwd ; bwd]
# fails: grade_fixed_context
# hint: backward half first|halves|swap
# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector.

    Args:
        enc_out: Tensor[B, S, 2H], the encoder's annotations [fwd ; bwd], 0 at padding.
        src_mask: BoolTensor[B, S], True at real tokens (padding comes last).

    Returns:
        Tensor[B, 2H]: [fwd half at the last real token ; bwd half at position 0].
    """
    B, S, E = enc_out.shape
    H = E // 2
    last = src_mask.long().sum(dim=-1).clamp(min=1) - 1  # (B,) position of the last real token
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]  # (B, H)
    bwd = enc_out[:, 0, H:]  # (B, H)
    return torch.cat([bwd, fwd], dim=-1)  # (B, 2H)
