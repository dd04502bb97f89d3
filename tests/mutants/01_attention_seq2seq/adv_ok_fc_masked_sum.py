# mutant: forward half picked by a one-hot mask times enc_out, summed over positions
# fails: none
# %% fixed_context
def fixed_context(enc_out, src_mask):
    H = enc_out.size(-1) // 2
    n = src_mask.sum(-1, keepdim=True)  # (B, 1)
    pos = torch.arange(enc_out.size(1), device=enc_out.device)[None, :]
    pick = (pos == n - 1).to(enc_out.dtype)  # (B, S) one-hot at the last real token
    fwd = (pick[..., None] * enc_out[..., :H]).sum(1)
    return torch.cat([fwd, enc_out[:, 0, H:]], dim=-1)
