# mutant: always permutes dim 1 (x[:, perm]) whatever `dim` is
# fails: grade_perm
# hint: ignor|dim argument|along dim
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(1))
        if not torch.allclose(fn(x[:, perm]), y[:, perm], atol=atol):
            return False
    return True
