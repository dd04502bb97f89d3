# mutant: the causal mask is always created on the CPU (the device argument is ignored)
# fails: grade_causal
# hint: device
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    """BoolTensor[T, T], True on and below the diagonal: query i may attend to keys j <= i."""
    return torch.tril(torch.ones(T, T, dtype=torch.bool))
