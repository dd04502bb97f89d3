# mutant: leading dims flattened, scores by torch.baddbmm with the mask as the additive input, softmax by exp/sum with max subtraction
# fails: none
# %% sdpa
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    Tq, d_k = q.shape[-2:]
    Tk = k.size(-2)
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        shapes.append(mask.shape[:-2])
    lead = torch.broadcast_shapes(*shapes)
    q3 = q.expand(*lead, Tq, d_k).reshape(-1, Tq, d_k)
    k3 = k.expand(*lead, Tk, d_k).reshape(-1, Tk, d_k)
    bias = torch.zeros(q3.size(0), Tq, Tk, dtype=q.dtype, device=q.device)
    if mask is not None:
        full = mask.expand(*lead, Tq, Tk).reshape(-1, Tq, Tk)
        if full.dtype == torch.bool:
            bias = bias.masked_fill(~full, float("-inf"))
        else:
            bias = bias + full.to(q.dtype)
    scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(d_k))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    weights = torch.where(denom > 0, e / denom.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    weights = weights.reshape(*lead, Tq, Tk)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = attn @ v
    return out, weights
