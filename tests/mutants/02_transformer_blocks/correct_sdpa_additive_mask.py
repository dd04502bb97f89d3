# mutant: a boolean mask converted to an additive float mask (0 / -inf) and added to the scores
# fails: none
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) * d_k ** -0.5
    if mask is not None:
        if mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
            additive = additive.masked_fill(~mask, float("-inf"))
        else:
            additive = mask
        scores = scores + additive
    weights = torch.softmax(scores, dim=-1)
    fully_masked = torch.isinf(scores).all(dim=-1, keepdim=True)
    weights = torch.where(fully_masked, torch.zeros_like(weights), weights)
    if dropout_p > 0.0:
        out = F.dropout(weights, p=dropout_p) @ v
    else:
        out = weights @ v
    return out, weights
