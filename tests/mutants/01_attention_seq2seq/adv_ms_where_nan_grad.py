# mutant: additive log(mask) masking, softmax, then torch.where(mask, w, 0): forward fine, gradient NaN in fully masked rows
# fails: grade_masked_softmax
# hint: grad|nan
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    w = torch.softmax(scores + torch.log(mask.to(scores.dtype)), dim=-1)  # log 0 = -inf at masked entries
    return torch.where(mask.expand_as(w), w, torch.zeros_like(w))
