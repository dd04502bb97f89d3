# mutant: correct: the index by loops
# fails: none
# %% relative_position
def relative_position_index(window: int) -> Tensor:
    """``LongTensor[M*M, M*M]``: the row of the bias table for every (query pixel, key pixel) pair of a window."""
    M = window
    out = torch.empty(M * M, M * M, dtype=torch.long)
    for i in range(M * M):
        for j in range(M * M):
            out[i, j] = (i // M - j // M + M - 1) * (2 * M - 1) + (i % M - j % M + M - 1)
    return out
