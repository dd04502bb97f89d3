# mutant: strict causal mask: ~triu(ones) (triu with diagonal=0) also blocks the diagonal, a token cannot see itself
# fails: grade_causal
# hint: diagonal|itself
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    return ~torch.triu(torch.ones(T, T, dtype=torch.bool, device=device))
