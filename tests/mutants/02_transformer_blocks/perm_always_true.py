# mutant: the test always returns True (compares fn(x) with itself)
# fails: grade_perm
# hint: not (permutation-)?equivariant|says True|always
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim))
        y_perm = y.index_select(dim, perm)
        if not torch.allclose(y_perm, y.index_select(dim, perm), atol=atol):
            return False
    return True
