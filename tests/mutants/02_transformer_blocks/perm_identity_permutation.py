# mutant: the "permutation" is torch.arange (the identity), so every function passes
# fails: grade_perm
# hint: identity|arange|not (permutation-)?equivariant|says True
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    perm = torch.arange(x.size(dim))
    return torch.allclose(fn(x.index_select(dim, perm)), y.index_select(dim, perm), atol=atol)
