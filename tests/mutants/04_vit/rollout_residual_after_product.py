# mutant: the identity added once, after the product
# fails: grade_rollout
# hint: identity added after the product
# %% rollout
def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """``R = A_L ... A_2 A_1`` of the head-averaged weights (``0.5 A + 0.5 I`` with ``residual``, rows
    renormalised): ``Tensor[B, T, T]``, rows summing to 1. ``attentions``: one ``Tensor[B, heads, T, T]`` per
    block, the first block first."""
    result = None
    for w in attentions:
        a = w.mean(dim=1)  # (B, T, T): the heads averaged
        result = a if result is None else a @ result  # the later block on the left
    if result is None:
        raise ValueError("attention_rollout needs the weights of at least one block")
    if residual:
        result = 0.5 * result + 0.5 * torch.eye(result.shape[-1])
    return result
