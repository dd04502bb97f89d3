# mutant: the bias index off by one (offsets shifted by M instead of M - 1)
# fails: grade_relative_position
# hint: relative_position_index|row|offset
# %% relative_position
def relative_position_index(window: int) -> Tensor:
    """``LongTensor[M*M, M*M]``: the row of the bias table for every (query pixel, key pixel) pair of a window."""
    M = window
    coords = torch.stack(torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")).flatten(1)  # (2, M*M)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M): query minus key, in -(M-1)..M-1
    return (rel[0] + M - 1) * (2 * M - 1) + (rel[1] + M)
