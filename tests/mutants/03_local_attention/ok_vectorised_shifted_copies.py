# mutant: correct: one shifted copy of the padded k and v per offset, -inf where outside
# fails: none
# %% vectorised
def local_attention(q, k, v, rel_h, rel_w, kernel_size):
    """Shifted copies of the zero-padded k and v, one per offset; -inf where the neighbour is outside."""
    B, N, D, H, W = q.shape
    K, P = kernel_size, kernel_size // 2
    kp, vp = (F.pad(t, (P, P, P, P)) for t in (k, v))
    ones = F.pad(q.new_ones(H, W), (P, P, P, P))
    logits, values = [], []
    for y in range(K):
        for x in range(K):
            r = torch.cat([rel_h[:, y], rel_w[:, x]], -1)[None, :, :, None, None]  # (1, N, D, 1, 1)
            s = (q * (kp[..., y:y + H, x:x + W] + r)).sum(2)
            logits.append(s.masked_fill(ones[y:y + H, x:x + W] == 0, float("-inf")))
            values.append(vp[..., y:y + H, x:x + W])
    w = torch.stack(logits, 2).softmax(2)  # (B, N, K*K, H, W)
    out = (w.unsqueeze(2) * torch.stack(values, 3)).sum(3)
    return out, w.view(B, N, K, K, H, W).permute(0, 1, 4, 5, 2, 3)
