# mutant: additive score with W applied to the keys and U to the query (square cases only)
# fails: grade_scores
# hint: swap|W|U|additive
# %% scores
def dot_score(query, keys):
    """q . k_j for every key: query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)  # (B, S, d) @ (B, d, 1) -> (B, S, 1) -> (B, S)


def scaled_dot_score(query, keys):
    """q . k_j / sqrt(d): query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return dot_score(query, keys) / math.sqrt(query.size(-1))


def general_score(query, keys, W):
    """q^T W k_j (Luong's "general", bilinear).

    query Tensor[B, d_q], keys Tensor[B, S, d_k], W Tensor[d_q, d_k] -> scores Tensor[B, S].
    """
    return dot_score(query @ W, keys)  # (B, d_q) @ (d_q, d_k) -> (B, d_k), then a dot score with each key


def additive_score(query, keys, W, U, v):
    """v^T tanh(W q + U k_j) (Bahdanau's, additive).

    query Tensor[B, d_q], keys Tensor[B, S, d_k], W Tensor[A, d_q], U Tensor[A, d_k], v Tensor[A]
    -> scores Tensor[B, S].
    """
    hidden = torch.tanh((query @ U.T).unsqueeze(1) + keys @ W.T) if W.shape == U.shape else torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T)  # (B, 1, A) + (B, S, A) -> (B, S, A)
    return hidden @ v  # (B, S)
