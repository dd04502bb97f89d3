# mutant: a new torch.randperm per trial, tokens moved to dim 0 with movedim, fn(x) recomputed each trial, allclose
# fails: none
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    for _ in range(n_trials):
        perm = torch.randperm(x.shape[dim])
        x_perm = x.movedim(dim, 0)[perm].movedim(0, dim)
        expected = fn(x).movedim(dim, 0)[perm].movedim(0, dim)
        if not torch.allclose(fn(x_perm), expected, atol=atol):
            return False
    return True
