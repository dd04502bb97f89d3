# mutant: the row offset times 2M
# fails: grade_relative_position
# hint: 2M
# %% relative_position
def relative_position_index(window: int) -> Tensor:
    """``LongTensor[M*M, M*M]``: the row of the bias table for every (query pixel, key pixel) pair of a window."""
    M = window
    coords = torch.stack(torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")).flatten(1)  # (2, M*M)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M): query minus key, in -(M-1)..M-1
    return (rel[0] + M - 1) * (2 * M) + (rel[1] + M - 1)
