# mutant: the embeddings indexed by the key's absolute position (a, b), not the offset
# fails: grade_naive
# hint: absolute
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
                    if not (0 <= a < H and 0 <= b < W):
                        continue  # outside the image: never attended
                    r = torch.cat([rel_h[:, min(a, kernel_size - 1)], rel_w[:, min(b, kernel_size - 1)]], -1)  # (N, D)
                    logits.append((qij * (k[:, :, :, a, b] + r)).sum(-1))  # (B, N)
                    values.append(v[:, :, :, a, b])  # (B, N, Dv)
                    where.append((P + dy, P + dx))
            a_ = torch.stack(logits, -1).softmax(-1)  # (B, N, n)
            out[:, :, :, i, j] = (a_.unsqueeze(-1) * torch.stack(values, 2)).sum(2)
            for t, (y, x) in enumerate(where):
                weights[:, :, i, j, y, x] = a_[..., t]
    return out, weights
