# mutant: the embeddings indexed by i - a instead of a - i (rel_h.flip(1))
# fails: grade_vectorised
# hint: sign flipped
# %% vectorised
def local_attention(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                    kernel_size: int) -> tuple[Tensor, Tensor]:
    """Vectorised local attention: ``(out, weights)`` as :func:`local_attention_naive`.

    The keys and values are zero-padded by ``P`` and unfolded (``F.unfold``) into the ``K*K``
    neighbours of every pixel; neighbours outside the image get logit ``-inf``. Memory: the unfolded
    keys and values are ``K*K`` times the input, ``B * N * D * K*K * H * W`` elements each.
    """
    B, N, D, H, W = q.shape
    K, P, half = kernel_size, kernel_size // 2, D // 2

    def neighbours(x: Tensor) -> Tensor:  # (B, N, C, H, W) -> (B, N, C, K*K, H, W), zero outside
        C = x.shape[2]
        cols = F.unfold(x.reshape(B * N, C, H, W), K, padding=P)  # (BN, C*K*K, H*W)
        return cols.view(B, N, C, K * K, H, W)

    logits = torch.einsum("bndhw,bndphw->bnphw", q, neighbours(k))  # content: q . k_ab, (B, N, K*K, H, W)
    lh = torch.einsum("bndhw,nyd->bnyhw", q[:, :, :half], rel_h.flip(1))  # rows:    q[:D/2] . rel_h[dy]
    lw = torch.einsum("bndhw,nxd->bnxhw", q[:, :, half:], rel_w.flip(1))  # columns: q[D/2:] . rel_w[dx]
    logits = logits + (lh[:, :, :, None] + lw[:, :, None, :]).flatten(2, 3)  # (B, N, K*K, H, W)
    inside = F.unfold(q.new_ones(1, 1, H, W), K, padding=P).view(K * K, H, W).bool()  # (K*K, H, W)
    weights = logits.masked_fill(~inside, float("-inf")).softmax(2)
    out = torch.einsum("bnphw,bndphw->bndhw", weights, neighbours(v))  # (B, N, Dv, H, W)
    return out, weights.view(B, N, K, K, H, W).permute(0, 1, 4, 5, 2, 3)  # weights (B, N, H, W, K, K)
