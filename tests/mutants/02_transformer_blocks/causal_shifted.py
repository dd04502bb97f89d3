# mutant: shifted causal mask: tril(diagonal=1) lets each query see the next token
# fails: grade_causal
# hint: next|future|ahead|shift
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(diagonal=1)
