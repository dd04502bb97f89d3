# mutant: manual exp / sum without subtracting the max: overflows for large scores
# fails: grade_masked_softmax
# hint: overflow|max|large|inf|nan|stab
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    e = torch.exp(scores) * mask
    denom = e.sum(-1, keepdim=True)
    return e / denom.clamp_min(1e-30)
