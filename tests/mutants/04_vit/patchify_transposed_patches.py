# mutant: each patch transposed: flattened (channel, column, row)
# fails: grade_patchify
# hint: transposed
# %% patchify
def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``Tensor[B, C, H, W] -> Tensor[B, N, C * p * p]``: the ``p x p`` patches in raster order (patch
    ``r * gw + c`` at grid row ``r``, column ``c``), each flattened as (channel, row, column)."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    gh, gw = H // p, W // p
    x = images.reshape(B, C, gh, p, gw, p)  # (B, C, gh, p, gw, p): row = r * p + i, column = c * p + j
    x = x.permute(0, 2, 4, 1, 5, 3)  # (B, gh, gw, C, p, p): grid position first, then the patch
    return x.reshape(B, gh * gw, C * p * p)  # (B, N, C*p*p): patch r * gw + c, flattened (channel, row, column)
