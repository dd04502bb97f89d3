# mutant: boolean mask applied after the softmax (masked weights zeroed, rows not renormalised)
# fails: grade_sdpa
# hint: sum to 1|before the softmax|softmax|renormal|mask
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None and mask.dtype != torch.bool:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    if mask is not None and mask.dtype == torch.bool:
        weights = weights.masked_fill(~mask, 0.0)
    weights = torch.nan_to_num(weights, nan=0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = attn @ v
    return out, weights
