# mutant: the ATen operator called directly (a reviewer's; kept its points while only F.* was forbidden by name)
# fails: grade_losses
# hint: aten.binary_cross_entropy_with_logits
# %% losses
def bce_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits: the mean over every pixel of ``weight * (softplus(z) - t z)``."""
    return torch.ops.aten.binary_cross_entropy_with_logits.default(logits, target, weight, None, 1)


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - mean_b (2 sum p t + eps) / (sum p + sum t + eps)``, ``p = sigmoid(logits)``, the sums per image."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice_b = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)  # (B,)
    return 1 - dice_b.mean()


def combined_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """``bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)``."""
    return bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)
