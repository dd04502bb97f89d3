# mutant: delegation: the output comes from F.scaled_dot_product_attention (only the weights are computed)
# fails: grade_sdpa
# hint: do not call|must not|not allowed|forbidden|delegat|yourself
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
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = weights.masked_fill(blocked, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out, weights
