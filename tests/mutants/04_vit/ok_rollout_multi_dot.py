# mutant: correct: the rollout of each image by torch.linalg.multi_dot (the heads stacked and averaged first)
# fails: none
# %% rollout
def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """``R = A_L ... A_2 A_1``."""
    if not attentions:
        raise ValueError("no blocks")
    A = torch.stack(list(attentions)).mean(2)  # (L, B, T, T)
    if residual:
        A = (A + torch.eye(A.shape[-1], dtype=A.dtype)) / 2
    out = []
    for b in range(A.shape[1]):
        mats = [A[l, b] for l in reversed(range(A.shape[0]))]
        out.append(mats[0] if len(mats) == 1 else torch.linalg.multi_dot(mats))
    return torch.stack(out)
