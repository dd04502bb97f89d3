# mutant: IoU of the batch's pooled pixels, repeated for every image
# fails: grade_metrics
# hint: whole batch|one score per image
# %% metrics
def pixel_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    """The fraction of pixels where ``pred`` equals ``target``, per image: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    return (p == t).float().mean(1)


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """``|P & T| / |P | T|`` per image, 1 where both are empty: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter, union = (p & t).sum().float().expand(p.shape[0]), (p | t).sum().float().expand(p.shape[0])
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def dice(pred: Tensor, target: Tensor) -> Tensor:
    """``2 |P & T| / (|P| + |T|)`` per image, 1 where both are empty: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter, total = (p & t).sum(1).float(), (p.sum(1) + t.sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
