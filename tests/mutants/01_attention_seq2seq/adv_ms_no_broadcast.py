# mutant: mask used with view(scores.shape): fails for a broadcast (B, 1, S) mask
# fails: grade_masked_softmax
# hint: broadcast|shape|\(B, 1, S\)
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    mask = mask.reshape(scores.shape)
    filled = scores.masked_fill(~mask, float("-inf"))
    any_allowed = mask.any(dim=-1, keepdim=True)
    filled = filled.masked_fill(~any_allowed, 0.0)
    weights = torch.softmax(filled, dim=-1)
    return weights.masked_fill(~mask, 0.0)
