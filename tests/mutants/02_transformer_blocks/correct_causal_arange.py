# mutant: the mask built by comparing position indices (j <= i) with broadcasting
# fails: none
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    i = torch.arange(T, device=device)
    return i[None, :] <= i[:, None]
