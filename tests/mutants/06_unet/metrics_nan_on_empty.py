# mutant: IoU and Dice 0/0 = NaN when both masks are empty
# fails: grade_metrics
# hint: NaN
# %% metrics
def pixel_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    """The fraction of pixels where ``pred`` equals ``target``, per image: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    return (p == t).float().mean(1)


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """``|P & T| / |P | T|`` per image, 1 where both are empty: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
    return inter / union


def dice(pred: Tensor, target: Tensor) -> Tensor:
    """``2 |P & T| / (|P| + |T|)`` per image, 1 where both are empty: ``[B, ...] -> [B]``."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter, total = (p & t).sum(1).float(), (p.sum(1) + t.sum(1)).float()
    return 2 * inter / total
