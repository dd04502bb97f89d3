# mutant: no 1/sqrt(d_k): the scores are q @ k^T
# fails: grade_sdpa
# hint: sqrt|\bscal(e|ing)\b|factor
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = weights.masked_fill(blocked, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    return attn @ v, weights
