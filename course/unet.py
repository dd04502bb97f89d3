"""From fully convolutional networks to U-Net: the course's answers to assignment 06.

- :func:`fc_to_conv`: a classifier's linear layer on a flattened ``C x h x w`` feature map rewritten as an
  ``h x w`` convolution (Long et al., 2015): the same outputs on an ``h x w`` map, a score map on larger ones.
- :func:`conv_transpose2d_stamp`: the transposed convolution by stamping: every input pixel multiplies the
  kernel and adds it to the output at ``stride`` times its position; equal to ``F.conv_transpose2d``.
- :func:`max_unpool`: max unpooling with the indices ``F.max_pool2d(..., return_indices=True)`` remembered;
  equal to ``F.max_unpool2d``.
- :class:`UNet` (Ronneberger et al., 2015), with or without its skip connections, for any input size.
- losses (:func:`bce_loss`, :func:`soft_dice_loss`, :func:`combined_loss`) and per-image metrics
  (:func:`pixel_accuracy`, :func:`iou`, :func:`dice`).

Layouts: images, logits, masks ``Tensor[B, C, H, W]``; a transposed convolution's weight
``Tensor[C_in, C_out, kH, kW]`` (as ``nn.ConvTranspose2d``'s). Masks are binary, 1 = the positive class
(for ISBI 2012: membrane). Withheld from the student copy while assignment 06 is open
(:mod:`autograder.classroom`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fc_to_conv", "conv_transpose2d_stamp", "max_unpool", "double_conv", "UNet", "bce_loss",
           "soft_dice_loss", "combined_loss", "pixel_accuracy", "iou", "dice"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ------------------------------------------------------------------------------------------------------
# 1. fully connected -> convolution
# ------------------------------------------------------------------------------------------------------
def fc_to_conv(linear: nn.Linear, channels: int, height: int, width: int) -> nn.Conv2d:
    """The ``nn.Conv2d(channels, out, (height, width))`` that computes ``linear`` on every ``height x width`` window.

    ``linear`` maps a feature map ``[B, channels, height, width]`` flattened (``x.flatten(1)``: channel first,
    then row, then column) to ``[B, out]``. Its weight ``[out, channels * height * width]`` viewed as
    ``[out, channels, height, width]`` is the kernel; the bias is copied (none if it has none). On a
    ``[B, channels, H, W]`` map the convolution returns the score map ``[B, out, H - height + 1, W - width + 1]``.
    """
    out_features, in_features = linear.weight.shape
    if in_features != channels * height * width:
        raise ValueError(f"the linear layer takes {in_features} features, not {channels} x {height} x {width}")
    conv = nn.Conv2d(channels, out_features, (height, width), bias=linear.bias is not None)
    conv = conv.to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(out_features, channels, height, width))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


# ------------------------------------------------------------------------------------------------------
# 2. transposed convolution and max unpooling
# ------------------------------------------------------------------------------------------------------
def conv_transpose2d_stamp(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                           stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                           output_padding: int | tuple[int, int] = 0) -> Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)`` by stamping.

    ``x [B, C_in, H, W]``, ``weight [C_in, C_out, kH, kW]`` -> ``[B, C_out, H_out, W_out]`` with
    ``H_out = (H - 1) * stride - 2 * padding + kH + output_padding`` (the same for W). Input pixel ``(i, j)``
    multiplies the kernel (not flipped) and is added to the full output at rows ``i * stride .. + kH - 1``,
    columns ``j * stride .. + kW - 1``; the full output is ``(H - 1) * stride + kH + output_padding`` high, and
    ``padding`` rows and columns are cropped from each side. Loops over the input pixels, every image and
    channel at once.
    """
    B, C_in, H, W = x.shape
    C_out, kH, kW = weight.shape[1], weight.shape[2], weight.shape[3]
    (sh, sw), (ph, pw), (oh, ow) = _pair(stride), _pair(padding), _pair(output_padding)
    full = x.new_zeros(B, C_out, (H - 1) * sh + kH + oh, (W - 1) * sw + kW + ow)
    for i in range(H):
        for j in range(W):
            stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight)  # (B, C_out, kH, kW)
            full[:, :, i * sh:i * sh + kH, j * sw:j * sw + kW] += stamp
    H_out, W_out = full.shape[2] - 2 * ph, full.shape[3] - 2 * pw
    out = full[:, :, ph:ph + H_out, pw:pw + W_out]
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out


def max_unpool(x: Tensor, indices: Tensor, output_size: tuple[int, int]) -> Tensor:
    """``F.max_unpool2d``: every value of ``x`` back where its maximum was, zeros elsewhere.

    ``x, indices [B, C, h, w]`` (as ``F.max_pool2d(..., return_indices=True)`` returns them: each index is
    ``row * W + column`` in its own ``H x W`` plane of the input) -> ``[B, C, H, W]``, ``output_size = (H, W)``.
    """
    B, C = x.shape[:2]
    H, W = output_size
    out = x.new_zeros(B, C, H * W)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(B, C, H, W)


# ------------------------------------------------------------------------------------------------------
# 3. U-Net
# ------------------------------------------------------------------------------------------------------
def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two (3x3 convolution with padding 1, batch norm, ReLU): ``[B, in_ch, H, W] -> [B, out_ch, H, W]``."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net with "same" convolutions: ``x [B, in_ch, H, W] -> logits [B, out_ch, H, W]`` for any ``H, W``.

    Level ``l = 0 .. depth - 1`` of the encoder (``down[l]``) has ``width * 2**l`` channels at ``1 / 2**l`` of
    the resolution, ``bottom`` has ``width * 2**depth`` at ``1 / 2**depth``; each decoder level ``l``
    (``up[l]``, ``dec[l]``, for ``l = depth - 1`` down to 0) doubles the resolution with a 2x2 stride-2
    transposed convolution to ``width * 2**l`` channels and concatenates ``[skip, upsampled]`` (the encoder's
    features of level ``l`` first) before its double convolution; without skips the decoder gets the upsampled
    features alone. ``head`` is a 1x1 convolution to ``out_ch`` logits.

    Any size: ``x`` is zero-padded at the bottom and right to multiples of ``2**depth`` and the logits cropped
    back to ``[..., :H, :W]``.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 1, width: int = 16, depth: int = 4, skips: bool = True) -> None:
        super().__init__()
        self.depth, self.skips = depth, skips
        chs = [width * 2**level for level in range(depth + 1)]  # channels of each level, the bottom's last
        self.down = nn.ModuleList([double_conv(in_ch if level == 0 else chs[level - 1], chs[level])
                                   for level in range(depth)])
        self.bottom = double_conv(chs[depth - 1], chs[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chs[level + 1], chs[level], 2, stride=2) for level in range(depth)])
        self.dec = nn.ModuleList([double_conv((2 if skips else 1) * chs[level], chs[level]) for level in range(depth)])
        self.head = nn.Conv2d(chs[0], out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-W) % m, 0, (-H) % m))  # zeros at the right and bottom: multiples of 2**depth
        features = []
        for level in range(self.depth):
            x = self.down[level](x)  # (B, width * 2**level, H', W')
            features.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)  # (B, width * 2**depth, H' / 2**depth, W' / 2**depth)
        for level in reversed(range(self.depth)):
            x = self.up[level](x)  # (B, width * 2**level, ...): the resolution of level `level`
            if self.skips:
                x = torch.cat([features[level], x], 1)  # [skip, upsampled]
            x = self.dec[level](x)
        return self.head(x)[..., :H, :W]  # (B, out_ch, H, W)


# ------------------------------------------------------------------------------------------------------
# 4. losses (on logits) and metrics (on binary masks), per image
# ------------------------------------------------------------------------------------------------------
def bce_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits, the mean over every pixel of ``weight * bce`` (weight 1 by default).

    ``bce = -(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))) = softplus(z) - t z`` (stable for large ``|z|``).
    ``logits, target [B, 1, H, W]``, ``weight`` broadcastable to them (e.g. the U-Net paper's border weights).
    """
    per_pixel = F.softplus(logits) - target * logits
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.mean()


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - mean_b (2 sum p t + eps) / (sum p + sum t + eps)``, ``p = sigmoid(logits)``, sums per image.

    ``eps`` (smoothing) keeps it defined on empty masks: an empty target predicted empty gives Dice 1, loss 0.
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice_b = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)  # (B,)
    return 1 - dice_b.mean()


def combined_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """:func:`bce_loss` + :func:`soft_dice_loss`."""
    return bce_loss(logits, target, weight) + soft_dice_loss(logits, target, eps)


def _binary(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return pred.flatten(1).bool(), target.flatten(1).bool()


def pixel_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    """The fraction of pixels where the binary ``pred`` equals ``target``, per image: ``[B, ...] -> [B]``."""
    p, t = _binary(pred, target)
    return (p == t).float().mean(1)


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """Intersection over union of the positive pixels, per image: ``|P & T| / |P | T|``, ``[B, ...] -> [B]``.

    Both masks empty: 1 (nothing to find, nothing found: perfect).
    """
    p, t = _binary(pred, target)
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def dice(pred: Tensor, target: Tensor) -> Tensor:
    """Dice (F1) of the positive pixels, per image: ``2 |P & T| / (|P| + |T|)``, ``[B, ...] -> [B]``.

    Both masks empty: 1.
    """
    p, t = _binary(pred, target)
    inter, total = (p & t).sum(1).float(), (p.sum(1) + t.sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
