# mutant: every mask treated as boolean (masked_fill(mask == 0, -inf)): a float mask is not added to the scores
# fails: grade_sdpa
# hint: \badded\b|as (a )?boolean|treated
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = weights.masked_fill(blocked, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    out = attn @ v
    return out, weights
