# mutant: einsum scores, sqrt via ** 0.5, additive through broadcasting and a sum
# fails: none
# %% scores
def dot_score(query, keys):
    return torch.einsum("bd,bsd->bs", query, keys)


def scaled_dot_score(query, keys):
    return torch.einsum("bd,bsd->bs", query, keys) * query.shape[-1] ** -0.5


def general_score(query, keys, W):
    return torch.einsum("bi,ij,bsj->bs", query, W, keys)


def additive_score(query, keys, W, U, v):
    wq = torch.einsum("ad,bd->ba", W, query)[:, None, :]
    uk = torch.einsum("ae,bse->bsa", U, keys)
    return (torch.tanh(wq + uk) * v).sum(-1)
