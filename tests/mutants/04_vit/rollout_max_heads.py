# mutant: the heads' maximum instead of their mean
# fails: grade_rollout
# hint: maximum
# %% rollout
def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """``R = A_L ... A_2 A_1`` of the head-averaged weights (``0.5 A + 0.5 I`` with ``residual``, rows
    renormalised): ``Tensor[B, T, T]``, rows summing to 1. ``attentions``: one ``Tensor[B, heads, T, T]`` per
    block, the first block first."""
    result = None
    for w in attentions:
        a = w.amax(dim=1)  # (B, T, T): the heads averaged
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result  # the later block on the left
    if result is None:
        raise ValueError("attention_rollout needs the weights of at least one block")
    return result
