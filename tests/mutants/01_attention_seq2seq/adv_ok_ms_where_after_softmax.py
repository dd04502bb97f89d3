# mutant: masked_fill(-inf), softmax, then torch.where(mask, w, 0): NaN forward rows replaced, gradient finite (masked_fill's backward zeroes the masked entries)
# fails: none
# %% masked_softmax
def masked_softmax(scores, mask):
    mask = mask.expand_as(scores)
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(mask, w, torch.zeros_like(w))
