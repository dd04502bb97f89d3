# mutant: fully masked query rows are left as NaN (softmax of all -inf), not set to zero
# fails: grade_sdpa
# hint: nan|fully masked
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    out = attn @ v
    return out, weights
