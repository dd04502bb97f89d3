# mutant: finfo.min fill computed in float64, cast back; zeroed afterwards
# fails: none
# %% masked_softmax
def masked_softmax(scores, mask):
    x = scores.double()
    x = x.masked_fill(~mask, torch.finfo(torch.float64).min)
    w = torch.softmax(x, dim=-1).masked_fill(~mask, 0.0)
    return w.to(scores.dtype)
