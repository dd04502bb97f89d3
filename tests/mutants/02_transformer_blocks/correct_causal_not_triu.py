# mutant: the negation of the strict upper triangle, made on `device`
# fails: none
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    """BoolTensor[T, T], True on and below the diagonal: query i may attend to keys j <= i."""
    return ~torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)
