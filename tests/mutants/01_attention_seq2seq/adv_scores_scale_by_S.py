# mutant: scaled dot divided by sqrt(S) (number of keys) instead of sqrt(d)
# fails: grade_scores
# hint: sqrt|\bd\b|query\.size|dim
# %% scores
def dot_score(query, keys):
    """q . k_j for every key: query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)


def scaled_dot_score(query, keys):
    """q . k_j / sqrt(d): query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return dot_score(query, keys) / math.sqrt(keys.size(1))


def general_score(query, keys, W):
    """q^T W k_j (Luong's "general", bilinear)."""
    return (keys @ (query @ W).unsqueeze(-1)).squeeze(-1)


def additive_score(query, keys, W, U, v):
    """v^T tanh(W q + U k_j) (Bahdanau's, additive)."""
    hidden = torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T)
    return hidden @ v
