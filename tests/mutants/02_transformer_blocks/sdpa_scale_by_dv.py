# mutant: scores scaled by sqrt(d_v) (v.size(-1)) instead of sqrt(d_k)
# fails: grade_sdpa
# hint: d_k|sqrt|scal
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(v.size(-1))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)
    weights = torch.where(torch.isneginf(scores).all(-1, keepdim=True), torch.zeros_like(weights), weights)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
