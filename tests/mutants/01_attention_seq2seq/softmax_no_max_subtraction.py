# mutant: exp without subtracting the maximum: overflows for large scores
# fails: grade_masked_softmax
# hint: NaN|inf|overflow|maximum
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries.

    Args:
        scores: Tensor[..., S].
        mask: BoolTensor broadcastable to scores, True where allowed.

    Returns:
        Tensor[..., S]: sums to 1 over the allowed entries, exactly 0 elsewhere; a row without any allowed entry
        is all zeros (no NaN, also in the gradient).
    """
    mask = mask.expand_as(scores)
    e = scores.exp() * mask
    weights = e / e.sum(-1, keepdim=True).clamp(min=1e-30)
    # a row with no allowed entry is softmax(-inf, ..., -inf) = 0/0 = NaN: set it to 0; the backward of masked_fill
    # sends a zero gradient through the filled entries, so no NaN reaches the scores either
    return weights.masked_fill(~mask, 0.0)
