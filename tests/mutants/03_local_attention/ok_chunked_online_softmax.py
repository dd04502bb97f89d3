# mutant: correct: row chunks, each an online softmax over the K*K shifted copies, checkpointed when training (local_attention not used)
# fails: none
# %% chunked
def local_attention_chunked(q, k, v, rel_h, rel_w, kernel_size, chunk):
    """Row chunks, each an online softmax over the K*K offsets (shifted copies), checkpointed when training."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    B, N, D, H, W = q.shape
    K, P = kernel_size, kernel_size // 2
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w))

    def rows(r, q, k, v, rel_h, rel_w):
        lo, hi = max(r - P, 0), min(r + chunk + P, H)
        qs = q[..., r:min(r + chunk, H), :]
        kp, vp = (F.pad(t[..., lo:hi, :], (P, P, P - (r - lo), P - (hi - min(r + chunk, H)))) for t in (k, v))
        inside = F.pad(q.new_ones(hi - lo, W), (P, P, P - (r - lo), P - (hi - min(r + chunk, H))))
        h_ = qs.shape[3]
        m = torch.full((B, N, h_, W), float("-inf"), dtype=q.dtype)
        den, num = torch.zeros(B, N, h_, W, dtype=q.dtype), torch.zeros(B, N, v.shape[2], h_, W, dtype=q.dtype)
        for y in range(K):
            for x in range(K):
                rel = torch.cat([rel_h[:, y], rel_w[:, x]], -1)[None, :, :, None, None]
                s = (qs * (kp[..., y:y + h_, x:x + W] + rel)).sum(2)
                s = s.masked_fill(inside[y:y + h_, x:x + W] == 0, float("-inf"))
                new = torch.maximum(m, s)
                safe = new.masked_fill(new == float("-inf"), 0.0)  # no -inf - -inf
                scale, e = (m - safe).exp(), (s - safe).exp()
                den = den * scale + e
                num = num * scale.unsqueeze(2) + e.unsqueeze(2) * vp[..., y:y + h_, x:x + W]
                m = new
        return num / den.unsqueeze(2)

    outs = [checkpoint(rows, r, q, k, v, rel_h, rel_w, use_reentrant=False) if training
            else rows(r, q, k, v, rel_h, rel_w) for r in range(0, H, chunk)]
    return torch.cat(outs, 3)
