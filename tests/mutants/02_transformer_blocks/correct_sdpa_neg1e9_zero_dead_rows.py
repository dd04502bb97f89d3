# mutant: masked_fill with -1e9 (finite) and fully masked rows explicitly set to zero
# fails: none
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.size(-1)))
    dead = None
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, -1e9)
            dead = ~mask.any(dim=-1, keepdim=True)
        else:
            scores = scores + mask
            dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores, dim=-1)
    if dead is not None:
        weights = weights.masked_fill(dead, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
