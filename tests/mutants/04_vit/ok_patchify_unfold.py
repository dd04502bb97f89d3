# mutant: correct: patchify by F.unfold (the sliding windows, (channel, row, column) each) and a transpose
# fails: none
# %% patchify
def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``Tensor[B, C, H, W] -> Tensor[B, N, C * p * p]``: the ``p x p`` patches in raster order (patch
    ``r * gw + c`` at grid row ``r``, column ``c``), each flattened as (channel, row, column)."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    return F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)  # (B, C*p*p, N) -> (B, N, C*p*p)
