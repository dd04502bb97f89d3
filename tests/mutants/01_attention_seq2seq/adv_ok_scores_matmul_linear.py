# mutant: scores with bmm, F.linear and matmul; general score as (W k) . q
# fails: none
# %% scores
def dot_score(query, keys):
    return torch.bmm(keys, query[:, :, None])[..., 0]


def scaled_dot_score(query, keys):
    d = keys.size(-1)
    return torch.bmm(keys, query[:, :, None])[..., 0] / math.sqrt(d)


def general_score(query, keys, W):
    Wk = F.linear(keys, W)  # (B, S, d_q): W k_j
    return (Wk * query[:, None, :]).sum(-1)


def additive_score(query, keys, W, U, v):
    return F.linear(torch.tanh(F.linear(query, W).unsqueeze(-2) + F.linear(keys, U)), v[None])[..., 0]
