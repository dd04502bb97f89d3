# mutant: correct: the rollout by functools.reduce over the reversed list, the residual by torch.eye added with rows renormalised by division
# fails: none
# %% rollout
import functools


def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """``R = A_L ... A_2 A_1``."""
    if len(attentions) == 0:
        raise ValueError("no blocks")
    mats = []
    for w in attentions:
        a = w.mean(1)
        if residual:
            a = a + torch.eye(a.shape[-1], dtype=a.dtype)
            a = a / a.sum(-1, keepdim=True)
        mats.append(a)
    return functools.reduce(torch.matmul, reversed(mats))
