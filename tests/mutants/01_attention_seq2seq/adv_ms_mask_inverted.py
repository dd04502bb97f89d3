# mutant: mask polarity inverted: -inf where the mask is True
# fails: grade_masked_softmax
# hint: invert|polarit|True|revers|padding|real
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(mask, float("-inf"))
    any_allowed = mask.any(dim=-1, keepdim=True)
    filled = filled.masked_fill(~any_allowed, 0.0)
    weights = torch.softmax(filled, dim=-1)
    return weights.masked_fill(mask, 0.0)
