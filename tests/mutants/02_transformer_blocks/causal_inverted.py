# mutant: inverted causal mask: True above the diagonal (PyTorch's "may not attend" convention)
# fails: grade_causal
# hint: invert|convention|opposite
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    return torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), diagonal=1)
