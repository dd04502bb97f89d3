# mutant: the output is permuted with the inverse permutation (perm.argsort()) instead of perm
# fails: grade_perm
# hint: inverse|argsort|same (way|permutation)
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim))
        inv = perm.argsort()
        if not torch.allclose(fn(x.index_select(dim, perm)), y.index_select(dim, inv), atol=atol):
            return False
    return True
