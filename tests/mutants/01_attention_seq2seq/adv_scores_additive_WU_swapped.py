# mutant: additive score tanh(U q + W k): W and U swapped (same widths in the test)
# fails: grade_scores
# hint: \bW\b|\bU\b|swap|query|key
# %% scores
def dot_score(query, keys):
    """q . k_j for every key: query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)


def scaled_dot_score(query, keys):
    """q . k_j / sqrt(d): query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return dot_score(query, keys) / math.sqrt(query.size(-1))


def general_score(query, keys, W):
    """q^T W k_j (Luong's "general", bilinear)."""
    return (keys @ (query @ W).unsqueeze(-1)).squeeze(-1)


def additive_score(query, keys, W, U, v):
    """v^T tanh(W q + U k_j) (Bahdanau's, additive)."""
    hidden = torch.tanh((query @ U.T).unsqueeze(1) + keys @ W.T)
    return hidden @ v
