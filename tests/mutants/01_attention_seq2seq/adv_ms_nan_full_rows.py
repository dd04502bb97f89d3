# mutant: -inf fill, no special case: a fully masked row is NaN
# fails: grade_masked_softmax
# hint: nan|no allowed|all zero|empty
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    any_allowed = mask.any(dim=-1, keepdim=True)
    weights = torch.softmax(filled, dim=-1)
    return weights
