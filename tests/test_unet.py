"""course.unet (the answers of assignment 06) against PyTorch's own operations and hand-made masks."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course import unet as U


def test_fc_to_conv_gives_the_classifier_and_a_score_map():
    torch.manual_seed(0)
    for bias in (True, False):
        lin = nn.Linear(3 * 4 * 5, 7, bias=bias)
        conv = U.fc_to_conv(lin, 3, 4, 5)
        assert conv.kernel_size == (4, 5) and (conv.bias is None) == (not bias)
        x = torch.randn(2, 3, 4, 5)
        torch.testing.assert_close(conv(x).flatten(1), lin(x.flatten(1)))
        big = torch.randn(2, 3, 9, 11)
        scores = conv(big)
        assert scores.shape == (2, 7, 6, 7)
        torch.testing.assert_close(scores[:, :, 2, 3], lin(big[:, :, 2:6, 3:8].flatten(1)))
    with pytest.raises(ValueError):
        U.fc_to_conv(nn.Linear(10, 2), 3, 2, 2)


@pytest.mark.parametrize("k, s, p, op", [(1, 1, 0, 0), (2, 2, 0, 0), (3, 1, 1, 0), (3, 2, 1, 1), (4, 2, 1, 0),
                                         (5, 3, 2, 2), ((2, 3), (2, 1), (0, 1), (1, 0))])
def test_stamping_equals_conv_transpose2d(k, s, p, op):
    torch.manual_seed(1)
    kh, kw = (k, k) if isinstance(k, int) else k
    x, w, b = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(3, 2, kh, kw, dtype=torch.float64), \
        torch.randn(2, dtype=torch.float64)
    for bias in (b, None):
        torch.testing.assert_close(U.conv_transpose2d_stamp(x, w, bias, s, p, op),
                                   F.conv_transpose2d(x, w, bias, s, p, op))


def test_stamping_has_gradients():
    torch.manual_seed(2)
    x, w = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True), \
        torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: U.conv_transpose2d_stamp(x, w, None, 2, 1, 1), (x, w))


@pytest.mark.parametrize("size, k, s", [((6, 8), 2, 2), ((7, 9), 2, 2), ((7, 7), 3, 2), ((5, 6), 3, 3)])
def test_max_unpool_equals_pytorchs(size, k, s):
    torch.manual_seed(3)
    x = torch.randn(2, 3, *size)
    pooled, idx = F.max_pool2d(x, k, s, return_indices=True)
    torch.testing.assert_close(U.max_unpool(pooled, idx, size), F.max_unpool2d(pooled, idx, k, s, output_size=size))


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (17, 8), (1, 3)])
def test_unet_keeps_any_size_and_pads_zeros_bottom_right(size):
    torch.manual_seed(4)
    for skips in (True, False):
        net = U.UNet(1, 2, width=4, depth=3, skips=skips).eval()
        x = torch.randn(2, 1, *size)
        with torch.no_grad():
            y = net(x)
            assert y.shape == (2, 2, *size)
            H, W = size
            padded = F.pad(x, (0, (-W) % 8, 0, (-H) % 8))
            torch.testing.assert_close(y, net(padded)[..., :H, :W])


def test_unet_skips_change_the_decoder_and_carry_detail():
    net, plain = U.UNet(1, 1, 4, 2, skips=True), U.UNet(1, 1, 4, 2, skips=False)
    assert net.dec[0][0].in_channels == 8 and plain.dec[0][0].in_channels == 4
    n = sum(p.numel() for p in net.parameters())
    assert n > sum(p.numel() for p in plain.parameters())


def test_losses():
    torch.manual_seed(5)
    z, t = torch.randn(3, 1, 6, 7) * 5, (torch.rand(3, 1, 6, 7) > 0.7).float()
    torch.testing.assert_close(U.bce_loss(z, t), F.binary_cross_entropy_with_logits(z, t))
    w = torch.rand(3, 1, 6, 7)
    torch.testing.assert_close(U.bce_loss(z, t, w), F.binary_cross_entropy_with_logits(z, t, w))
    assert torch.isfinite(U.bce_loss(torch.full((1, 1, 2, 2), 1e4), torch.zeros(1, 1, 2, 2)))
    p = torch.sigmoid(z)
    by_hand = torch.stack([1 - (2 * (p[b] * t[b]).sum() + 1) / (p[b].sum() + t[b].sum() + 1) for b in range(3)]).mean()
    torch.testing.assert_close(U.soft_dice_loss(z, t), by_hand)
    empty = torch.zeros(2, 1, 4, 4)
    assert U.soft_dice_loss(torch.full_like(empty, -30.0), empty) < 1e-6
    torch.testing.assert_close(U.combined_loss(z, t), U.bce_loss(z, t) + U.soft_dice_loss(z, t))


def test_metrics_on_hand_made_masks():
    t = torch.tensor([[1, 1, 0, 0]], dtype=torch.float32).view(1, 1, 2, 2)
    p = torch.tensor([[1, 0, 1, 0]], dtype=torch.float32).view(1, 1, 2, 2)
    e = torch.zeros(1, 1, 2, 2)
    pred, target = torch.cat([p, e, e, p]), torch.cat([t, e, t, e])
    torch.testing.assert_close(U.pixel_accuracy(pred, target), torch.tensor([0.5, 1.0, 0.5, 0.5]))
    torch.testing.assert_close(U.iou(pred, target), torch.tensor([1 / 3, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(U.dice(pred, target), torch.tensor([0.5, 1.0, 0.0, 0.0]))
