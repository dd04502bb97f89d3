"""course.swin (the answers of assignment 05 and the adapter to torchvision's names) against torchvision's
Swin Transformer and independent computations: a bug here would blame students for the course's own mistake."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import SwinTransformer
from torchvision.models.swin_transformer import PatchMerging as TorchvisionMerging
from torchvision.models.swin_transformer import ShiftedWindowAttention as TorchvisionAttention

import course.swin as ref
from course.testing import check_close


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_windows_are_raster_ordered_blocks_and_reverse_undoes_them():
    x = torch.randn(2, 8, 12, 3)
    win = ref.window_partition(x, 4)
    assert win.shape == (2 * 2 * 3, 16, 3)
    # window 4 is image 0's window row 1, column 1; its pixel 5 is row 1, column 1 inside it
    assert torch.equal(win[4].view(4, 4, 3), x[0, 4:8, 4:8])
    assert torch.equal(win[6 + 2].view(4, 4, 3), x[1, 0:4, 8:12])
    assert torch.equal(ref.window_reverse(win, 4, 8, 12), x)


def test_the_relative_position_index_names_the_offset():
    M = 3
    idx = ref.relative_position_index(M)
    for i in range(M * M):
        for j in range(M * M):
            dy, dx = i // M - j // M, i % M - j % M
            assert idx[i, j] == (dy + M - 1) * (2 * M - 1) + (dx + M - 1)


def test_the_shift_mask_keeps_regions_apart():
    M, s = 4, 2
    mask = ref.shift_mask(8, 8, M, s)  # 4 windows after rolling an 8x8 map by -2
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the first window holds one region only
    # the last window: pixel (0, 0) of it comes from the map's (6, 6) before the roll, (3, 3) from (1, 1)
    assert mask[3, 0, 15] == ref.MASKED and mask[3, 0, 0] == 0
    r = torch.zeros(8, 8)
    r[-2:, :] += 1
    r[:, -2:] += 2  # the regions of the rolled axes, labelled by where they came from
    lab = ref.window_partition(torch.roll(r, (-2, -2), (0, 1))[None, :, :, None], M).squeeze(-1)
    check_close(mask, torch.where(lab[:, :, None] == lab[:, None, :], 0.0, ref.MASKED), atol=0)


@pytest.mark.parametrize("B,H,W,C,M,heads,shift", [(2, 8, 8, 8, 4, 2, 2), (1, 9, 6, 12, 4, 3, 2), (2, 4, 4, 8, 4, 2, 2),
                                                   (1, 12, 8, 8, 4, 2, 0), (1, 10, 14, 6, 3, 2, 1), (2, 5, 5, 4, 2, 1, 1)])
def test_window_attention_is_torchvisions(B, H, W, C, M, heads, shift):
    theirs = TorchvisionAttention(C, [M, M], [shift, shift], heads)
    ours = ref.ShiftedWindowAttention(C, M, heads, shift)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, H, W, C)
    check_close(ours(x), theirs(x), atol=1e-5)
    if shift and min(H, W) > M:  # the mask matters: without it the result differs
        unmasked = ref.shifted_window_attention(x, ours.qkv.weight, ours.proj.weight, ours.relative_position_bias_table,
                                                M, heads, 0, ours.qkv.bias, ours.proj.bias)
        assert (unmasked - ours(x)).abs().max() > 1e-3


@pytest.mark.parametrize("H,W", [(4, 6), (5, 7)])
def test_patch_merging_is_torchvisions(H, W):
    theirs, ours = TorchvisionMerging(6), ref.PatchMerging(6)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, H, W, 6)
    check_close(ours(x), theirs(x), atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
def test_the_swin_is_torchvisions_with_the_same_weights(size):
    theirs = SwinTransformer([2, 2], 16, [2, 2, 2], [2, 2, 4], [4, 4], stochastic_depth_prob=0.0, num_classes=10).eval()
    ours = ref.Swin(2, 3, 10, 16, (2, 2, 2), (2, 2, 4), 4).eval()
    ref.load_torchvision_weights(ours, theirs)
    x = torch.randn(2, 3, *size)
    check_close(ours(x), theirs(x), atol=1e-4)
    with pytest.raises(ValueError, match="missing|unexpected"):
        ref.load_torchvision_weights(ref.Swin(2, 3, 10, 16, (2, 2), (2, 2), 4), theirs)
