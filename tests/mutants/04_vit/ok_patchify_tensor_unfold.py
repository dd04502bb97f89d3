# mutant: correct: patchify by Tensor.unfold twice, the channels moved after the grid, then flatten
# fails: none
# %% patchify
def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``Tensor[B, C, H, W] -> Tensor[B, N, C * p * p]``."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    blocks = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, gh, gw, p, p)
    return blocks.movedim(1, 3).flatten(3).flatten(1, 2)  # (B, gh, gw, C, p, p) -> (B, gh * gw, C * p * p)
