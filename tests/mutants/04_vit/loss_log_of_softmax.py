# mutant: log(softmax): -inf and NaN for large logits
# fails: grade_loss
# hint: in the thousands|log_softmax
# %% loss
def soft_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits Tensor[B, K]`` against class indices ``LongTensor[B]`` or class
    probabilities ``Tensor[B, K]``, with label smoothing: the target becomes ``(1 - smoothing) * target +
    smoothing / K``. A scalar; finite for any finite logits."""
    K = logits.shape[-1]
    if target.dim() == logits.dim() - 1:  # class indices (B,) -> one-hot (B, K)
        target = F.one_hot(target, K).to(logits.dtype)
    target = target * (1.0 - smoothing) + smoothing / K  # (B, K)
    return -(target * logits.softmax(dim=-1).log()).sum(dim=-1).mean()
