# mutant: correct: torch.where and -1e9 with the empty rows zeroed
# fails: none
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
    weights = torch.softmax(torch.where(mask, scores, torch.full_like(scores, -1e9)), dim=-1)
    # a row with no allowed entry is softmax(-inf, ..., -inf) = 0/0 = NaN: set it to 0; the backward of masked_fill
    # sends a zero gradient through the filled entries, so no NaN reaches the scores either
    return weights.masked_fill(~mask, 0.0)
