# mutant: correct: the loops over all K*K offsets of zero-padded k and v, -1e9 outside (exp(-1e9) is exactly 0)
# fails: none
# %% naive
def local_attention_naive(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                          kernel_size: int) -> tuple[Tensor, Tensor]:
    """Loops over pixels; every offset of the zero-padded keys, -1e9 where the neighbour is outside."""
    B, N, D, H, W = q.shape
    K = kernel_size
    P = K // 2
    kp, vp = F.pad(k, (P, P, P, P)), F.pad(v, (P, P, P, P))
    rel = torch.cat([rel_h[:, :, None, :].expand(-1, -1, K, -1), rel_w[:, None, :, :].expand(-1, K, -1, -1)], -1)
    outs, ws = [], []
    for i in range(H):
        row_o, row_w = [], []
        for j in range(W):
            keys = kp[:, :, :, i:i + K, j:j + K]  # (B, N, D, K, K)
            logits = torch.einsum("bnd,bndyx->bnyx", q[:, :, :, i, j], keys) + \
                torch.einsum("bnd,nyxd->bnyx", q[:, :, :, i, j], rel)
            ys, xs = torch.arange(K) + i - P, torch.arange(K) + j - P
            inside = ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
            w = logits.masked_fill(~inside, -1e9).flatten(2).softmax(-1).view(B, N, K, K)
            row_o.append(torch.einsum("bnyx,bndyx->bnd", w, vp[:, :, :, i:i + K, j:j + K]))
            row_w.append(w)
        outs.append(torch.stack(row_o, -1))
        ws.append(torch.stack(row_w, 2))
    return torch.stack(outs, -2), torch.stack(ws, 2)
