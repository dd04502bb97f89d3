# mutant: hostile: the course's IoU through an aliased import (every cell's scan refuses it; its own cell proves it)
# fails: grade_metrics
# hint: course\.unet
# %% metrics
import course.unet as _answers


def pixel_accuracy(pred, target):
    return _answers.pixel_accuracy(pred, target)


def iou(pred, target):
    return _answers.iou(pred, target)


def dice(pred, target):
    return _answers.dice(pred, target)
