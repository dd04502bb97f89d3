# mutant: attention written with torch.einsum and torch.where
# fails: none
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = torch.einsum("...qk,...kd->...qd", attn, v)
    return out, weights
