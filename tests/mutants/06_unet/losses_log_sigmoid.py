# mutant: BCE as log(sigmoid(z)): infinite for large logits
# fails: grade_losses
# hint: not finite|log
# %% losses
def bce_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits: the mean over every pixel of ``weight * (softplus(z) - t z)``."""
    p = torch.sigmoid(logits)
    per_pixel = -(target * p.log() + (1 - target) * (1 - p).log())
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.mean()


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - mean_b (2 sum p t + eps) / (sum p + sum t + eps)``, ``p = sigmoid(logits)``, the sums per image."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice_b = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)  # (B,)
    return 1 - dice_b.mean()


def combined_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """``bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)``."""
    return bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)
