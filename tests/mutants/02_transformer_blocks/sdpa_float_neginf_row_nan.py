# mutant: fully masked rows zeroed only for boolean masks; a float mask with a row of -inf still gives NaN
# fails: grade_sdpa
# hint: fully masked|nan|-inf|zero
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    empty = None
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
            empty = ~mask.any(dim=-1, keepdim=True)
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)
    if empty is not None:
        weights = weights.masked_fill(empty, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
