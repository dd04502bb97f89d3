# mutant: nearest upsampling: every value copied over its whole window
# fails: grade_max_unpool
# hint: nearest
# %% max_unpool
def max_unpool(x: Tensor, indices: Tensor, output_size: tuple[int, int]) -> Tensor:
    """``F.max_unpool2d``: ``x, indices [B, C, h, w]`` -> ``[B, C, H, W]``, each value at its index in its plane."""
    B, C = x.shape[:2]
    H, W = output_size
    return F.interpolate(x, size=(H, W), mode="nearest")
