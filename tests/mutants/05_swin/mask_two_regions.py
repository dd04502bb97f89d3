# mutant: two regions per axis, split at H - M
# fails: grade_shift_mask
# hint: two regions|H - M|region
# %% shift_mask
MASKED = -100.0  # the logit added between pixels of different regions (torchvision's value)


def shift_mask(H: int, W: int, window: int, shift, device=None) -> Tensor:
    """``Tensor[nW, M*M, M*M]`` for an ``H x W`` map (multiples of ``M``) rolled by ``-shift`` (one value for both
    axes, or ``(rows, columns)``; 0: that axis is not rolled): 0 where query and key pixel come from the same
    region, ``MASKED`` elsewhere."""
    M = window
    sy, sx = (shift, shift) if isinstance(shift, int) else shift
    rows = ((0, -M), (-M, None)) if sy else ((0, None),)
    cols = ((0, -M), (-M, None)) if sx else ((0, None),)
    region = torch.zeros(H, W, device=device)
    label = 0
    for r in rows:
        for c in cols:
            region[r[0]:r[1], c[0]:c[1]] = label
            label += 1
    lab = window_partition(region[None, :, :, None], M).squeeze(-1)  # (nW, M*M)
    same = lab[:, :, None] == lab[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, MASKED)
