# mutant: correct: metrics by float masks, 0/0 turned into 1 with nan_to_num, Dice from IoU
# fails: none
# %% metrics
def pixel_accuracy(pred, target):
    p, t = (pred.reshape(pred.shape[0], -1) > 0.5).float(), (target.reshape(target.shape[0], -1) > 0.5).float()
    return 1 - (p - t).abs().mean(dim=1)


def iou(pred, target):
    p, t = (pred.reshape(pred.shape[0], -1) > 0.5).float(), (target.reshape(target.shape[0], -1) > 0.5).float()
    inter = (p * t).sum(1)
    union = p.sum(1) + t.sum(1) - inter
    return torch.nan_to_num(inter / union, nan=1.0)


def dice(pred, target):
    j = iou(pred, target)
    return 2 * j / (1 + j)
