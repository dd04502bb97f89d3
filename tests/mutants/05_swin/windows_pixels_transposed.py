# mutant: the pixels of each window column by column
# fails: grade_windows
# hint: column by column
# %% windows
def window_partition(x: Tensor, window: int) -> Tensor:
    """``Tensor[B, H, W, C] -> Tensor[B * nW, M * M, C]``; ``H`` and ``W`` multiples of ``M = window``."""
    B, H, W, C = x.shape
    M = window
    if H % M or W % M:
        raise ValueError(f"a {H}x{W} map is not a whole number of {M}x{M} windows")
    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 4, 2, 5)
    return x.reshape(B * (H // M) * (W // M), M * M, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """The inverse of ``window_partition``: ``Tensor[B * nW, M * M, C] -> Tensor[B, H, W, C]``."""
    M, C = window, windows.shape[-1]
    B = windows.shape[0] // ((H // M) * (W // M))
    x = windows.view(B, H // M, W // M, M, M, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    return x.reshape(B, H, W, C)
