# mutant: smoothing applied to class indices only
# fails: grade_loss
# hint: soft targets not smoothed
# %% loss
def soft_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits Tensor[B, K]`` against class indices ``LongTensor[B]`` or class
    probabilities ``Tensor[B, K]``, with label smoothing: the target becomes ``(1 - smoothing) * target +
    smoothing / K``. A scalar; finite for any finite logits."""
    K = logits.shape[-1]
    if target.dim() == logits.dim() - 1:  # class indices (B,) -> one-hot (B, K)
        target = F.one_hot(target, K).to(logits.dtype)
        target = target * (1.0 - smoothing) + smoothing / K  # smoothed here only, for class indices
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
