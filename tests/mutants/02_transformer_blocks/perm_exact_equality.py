# mutant: compares with torch.equal (exact), ignoring atol
# fails: grade_perm
# hint: atol|tolerance|below
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim))
        if not torch.equal(fn(x.index_select(dim, perm)), y.index_select(dim, perm)):
            return False
    return True
