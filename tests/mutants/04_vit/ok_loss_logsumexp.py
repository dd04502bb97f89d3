# mutant: correct: the loss by logsumexp, the one-hot by scatter, float targets left as they are
# fails: none
# %% loss
def soft_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy against class indices or probabilities, with label smoothing."""
    B, K = logits.shape
    if not target.is_floating_point():
        target = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
    target = (1 - smoothing) * target + smoothing / K
    nll = logits.logsumexp(dim=1, keepdim=True) - logits  # (B, K): -log softmax
    return (target * nll).sum(1).sum() / B
