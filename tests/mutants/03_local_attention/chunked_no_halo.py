# mutant: each slab of chunk rows attended alone (no halo of P rows)
# fails: grade_chunked
# hint: slab|edge
# %% chunked
def local_attention_chunked(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                            kernel_size: int, chunk: int) -> Tensor:
    """:func:`local_attention`'s output, ``chunk`` rows at a time. Returns ``out`` only.

    Rows ``r .. r + chunk - 1`` only see rows ``r - P .. r + chunk - 1 + P``: local attention over that
    slab gives them exactly (the slab's edges are either the image's or more than ``P`` rows away), and
    its unfolded neighbourhoods are ``(chunk + 2P) / H`` of the whole image's. When a gradient will be
    needed, each slab is recomputed in the backward pass (``torch.utils.checkpoint``) instead of keeping
    its unfolded neighbourhoods alive until then.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    H, P = q.shape[3], kernel_size // 2
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w))

    def rows(r: int, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
        lo, hi = r, min(r + chunk, H)  # the slab
        out, _ = local_attention(q[:, :, :, lo:hi], k[:, :, :, lo:hi], v[:, :, :, lo:hi], rel_h, rel_w, kernel_size)
        return out[:, :, :, r - lo:min(r + chunk, H) - lo]  # its rows r .. r + chunk - 1

    outs = [checkpoint(rows, r, q, k, v, rel_h, rel_w, use_reentrant=False) if training
            else rows(r, q, k, v, rel_h, rel_w) for r in range(0, H, chunk)]
    return torch.cat(outs, 3)  # (B, N, Dv, H, W)
