# mutant: correct: windows by unflatten / movedim
# fails: none
# %% windows
def window_partition(x: Tensor, window: int) -> Tensor:
    """``Tensor[B, H, W, C] -> Tensor[B * nW, M * M, C]``; ``H`` and ``W`` multiples of ``M = window``."""
    B, H, W, C = x.shape
    M = window
    if H % M or W % M:
        raise ValueError(f"a {H}x{W} map is not a whole number of {M}x{M} windows")
    x = x.unflatten(2, (W // M, M)).unflatten(1, (H // M, M)).transpose(2, 3)
    return x.flatten(3, 4).flatten(0, 2)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """The inverse of ``window_partition``: ``Tensor[B * nW, M * M, C] -> Tensor[B, H, W, C]``."""
    M, C = window, windows.shape[-1]
    B = windows.shape[0] // ((H // M) * (W // M))
    x = windows.view(B, H // M, W // M, M, M, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    return x.reshape(B, H, W, C)
