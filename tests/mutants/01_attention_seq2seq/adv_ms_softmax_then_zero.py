# mutant: softmax over all positions, then masked weights set to 0 (does not renormalise)
# fails: grade_masked_softmax
# hint: after|sum to 1|renormal|before|sums? to
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    return torch.softmax(scores, dim=-1) * mask
