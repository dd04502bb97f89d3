# mutant: BCE summed over the pixels instead of averaged
# fails: grade_losses
# hint: sum over the pixels
# %% losses
def bce_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits: the mean over every pixel of ``weight * (softplus(z) - t z)``."""
    per_pixel = F.softplus(logits) - target * logits
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.sum()


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - mean_b (2 sum p t + eps) / (sum p + sum t + eps)``, ``p = sigmoid(logits)``, the sums per image."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice_b = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)  # (B,)
    return 1 - dice_b.mean()


def combined_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """``bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)``."""
    return bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)
