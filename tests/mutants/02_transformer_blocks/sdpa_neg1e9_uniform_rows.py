# mutant: masked_fill with -1e9 instead of -inf and no special case: a fully masked row gets uniform weights 1/Tk, not zeros
# fails: grade_sdpa
# hint: fully masked|all.*masked|zero
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, -1e9)
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)
    weights = torch.nan_to_num(weights)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
