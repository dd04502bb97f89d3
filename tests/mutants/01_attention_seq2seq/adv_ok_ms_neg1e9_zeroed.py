# mutant: -1e9 fill, softmax, then multiply by the mask (fully masked rows become 0)
# fails: none
# %% masked_softmax
def masked_softmax(scores, mask):
    w = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
    return w * mask
