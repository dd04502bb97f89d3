# mutant: correct: BCE with logsigmoid of z and -z, weights by multiplication with ones, Dice sums over (1, 2, 3)
# fails: none
# %% losses
def bce_loss(logits, target, weight=None):
    w = torch.ones_like(logits) if weight is None else weight
    return -(w * (target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))).mean()


def soft_dice_loss(logits, target, eps=1.0):
    p = logits.sigmoid()
    num = 2 * (p * target).sum(dim=(1, 2, 3)) + eps
    den = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + eps
    return (1 - num / den).mean()


def combined_loss(logits, target, weight=None, eps=1.0):
    return soft_dice_loss(logits, target, eps=eps) + bce_loss(logits, target, weight=weight)
