# mutant: atol passed positionally to torch.allclose, where the third argument is rtol (atol stays 1e-8)
# fails: grade_perm
# hint: atol|tolerance|below
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim))
        if not torch.allclose(fn(x.index_select(dim, perm)), y.index_select(dim, perm), atol):
            return False
    return True
