# mutant: boolean mask inverted: masked_fill(mask, -inf) blocks the keys that may be attended to
# fails: grade_sdpa
# hint: invert|may attend|True means|masked keys
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = weights.masked_fill(blocked, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    out = attn @ v
    return out, weights
