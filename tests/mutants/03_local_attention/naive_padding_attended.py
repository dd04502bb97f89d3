# mutant: positions outside the image attended as zero keys and values (no mask)
# fails: grade_naive
# hint: outside the image|no -inf mask|padd
# %% naive
def local_attention_naive(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                          kernel_size: int) -> tuple[Tensor, Tensor]:
    """The definition, with loops over pixels and offsets: ``(out [B, N, Dv, H, W], weights [B, N, H, W, K, K])``."""
    B, N, D, H, W = q.shape
    P = kernel_size // 2
    out = q.new_zeros(B, N, v.shape[2], H, W)
    weights = q.new_zeros(B, N, H, W, kernel_size, kernel_size)
    for i in range(H):
        for j in range(W):
            qij = q[:, :, :, i, j]  # (B, N, D)
            logits, values, where = [], [], []
            for dy in range(-P, P + 1):
                for dx in range(-P, P + 1):
                    a, b = i + dy, j + dx
                    inside = 0 <= a < H and 0 <= b < W
                    r = torch.cat([rel_h[:, P + dy], rel_w[:, P + dx]], -1)  # (N, D)
                    key = k[:, :, :, a, b] if inside else torch.zeros_like(qij)
                    logits.append((qij * (key + r)).sum(-1))  # (B, N)
                    values.append(v[:, :, :, a, b] if inside else torch.zeros_like(v[:, :, :, 0, 0]))
                    where.append((P + dy, P + dx))
            a_ = torch.stack(logits, -1).softmax(-1)  # (B, N, n)
            out[:, :, :, i, j] = (a_.unsqueeze(-1) * torch.stack(values, 2)).sum(2)
            for t, (y, x) in enumerate(where):
                weights[:, :, i, j, y, x] = a_[..., t]
    return out, weights
