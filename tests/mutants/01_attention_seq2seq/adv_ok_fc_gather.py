# mutant: fixed context with gather and the last real position from the mask's cumsum argmax
# fails: none
# %% fixed_context
def fixed_context(enc_out, src_mask):
    B, S, E = enc_out.shape
    H = E // 2
    last = (src_mask.long().cumsum(-1) * src_mask).argmax(-1)  # (B,) position of the last True
    fwd = enc_out.gather(1, last.view(B, 1, 1).expand(B, 1, E))[:, 0, :H]
    return torch.cat((fwd, enc_out[:, 0, H:]), -1)
