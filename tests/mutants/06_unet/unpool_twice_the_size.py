# mutant: output_size ignored: always twice the pooled size (an odd input loses a row)
# fails: grade_max_unpool
# hint: shape|output_size
# %% max_unpool
def max_unpool(x: Tensor, indices: Tensor, output_size: tuple[int, int]) -> Tensor:
    """``F.max_unpool2d``: ``x, indices [B, C, h, w]`` -> ``[B, C, H, W]``, each value at its index in its plane."""
    B, C = x.shape[:2]
    H, W = 2 * x.shape[2], 2 * x.shape[3]
    out = x.new_zeros(B, C, H * W)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(B, C, H, W)
