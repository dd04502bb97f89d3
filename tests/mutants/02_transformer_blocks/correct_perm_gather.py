# mutant: permutes with torch.gather on expanded indices, negative dims allowed, strict |diff| <= atol
# fails: none
# %% perm
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    """True if fn(x[perm]) == fn(x)[perm] along `dim` for `n_trials` random permutations."""
    x = x.clone()  # never touch the caller's tensor
    dim = dim % x.dim()

    def permute(t, perm):
        shape = [1] * t.dim()
        shape[dim] = -1
        return torch.gather(t, dim, perm.view(shape).expand_as(t))

    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim), device=x.device)
        got = fn(permute(x, perm))
        want = permute(y, perm)
        if got.shape != want.shape or not bool((got - want).abs().max() <= atol):
            return False
    return True
