# mutant: returns an additive float mask (0 / -inf) instead of a boolean one
# fails: grade_causal
# hint: bool|dtype
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    return torch.full((T, T), float("-inf"), device=device).triu(diagonal=1)
