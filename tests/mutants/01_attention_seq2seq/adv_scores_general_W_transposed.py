# mutant: general score q^T W^T k: W applied from the wrong side
# fails: grade_scores
# hint: \bW\b|transpos|side
# %% scores
def dot_score(query, keys):
    """q . k_j for every key: query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)


def scaled_dot_score(query, keys):
    """q . k_j / sqrt(d): query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return dot_score(query, keys) / math.sqrt(query.size(-1))


def general_score(query, keys, W):
    """q^T W k_j (Luong's "general", bilinear)."""
    return (keys @ (query @ W.T).unsqueeze(-1)).squeeze(-1)


def additive_score(query, keys, W, U, v):
    """v^T tanh(W q + U k_j) (Bahdanau's, additive)."""
    hidden = torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T)
    return hidden @ v
