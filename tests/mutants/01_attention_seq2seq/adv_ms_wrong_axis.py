# mutant: softmax over dim 0 instead of the last dim
# fails: grade_masked_softmax
# hint: axis|dim|last
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    any_allowed = mask.any(dim=-1, keepdim=True)
    filled = filled.masked_fill(~any_allowed, 0.0)
    weights = torch.softmax(filled, dim=0)
    return weights.masked_fill(~mask, 0.0)
