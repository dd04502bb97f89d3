# mutant: manual, stable softmax with torch.where, max over allowed entries only, float64-safe
# fails: none
# %% masked_softmax
def masked_softmax(scores, mask):
    mask = torch.broadcast_to(mask, scores.shape)
    neg = torch.finfo(scores.dtype).min
    safe = torch.where(mask, scores, torch.full_like(scores, neg))
    m = safe.amax(dim=-1, keepdim=True).detach()
    m = torch.where(mask.any(-1, keepdim=True), m, torch.zeros_like(m))
    e = torch.where(mask, torch.exp(torch.where(mask, scores - m, torch.zeros_like(scores))), torch.zeros_like(scores))
    denom = e.sum(-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))
