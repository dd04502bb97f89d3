"""course.plots, vision part: image grids, segmentation panels, augmentation previews.

Every plot returns a Figure with the expected axes, quietly (no warnings, nothing on stderr).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from conftest import render
from course import plots


pytestmark = pytest.mark.usefixtures("quiet")


def _image_data(ax) -> np.ndarray:
    return np.asarray(ax.get_images()[0].get_array())


def test_image_grid_labels_and_predictions_coloured() -> None:
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    names = ["cat", "dog", "ship"]
    fig = plots.plot_image_grid(x, labels=[0, 1, 2, 0, 1, 2, 0, 1, 2, 0], preds=[0, 2, 2, 0, 1, 1, 0, 1, 2, 0],
                                class_names=names, ncols=4, title="CIFAR")
    render(fig)
    assert len(fig.axes) == 10
    t0, t1 = fig.axes[0].title, fig.axes[1].title
    assert t0.get_text() == "cat / cat" and t1.get_text() == "dog / ship"
    assert to_rgba(t0.get_color()) != to_rgba(t1.get_color())
    assert to_rgba(t1.get_color())[0] > 0.6 and to_rgba(t0.get_color())[1] > 0.4  # red / green
    assert np.allclose(_image_data(fig.axes[3]), x[3].permute(1, 2, 0).numpy() / 255)


def test_image_grid_unnormalises_and_handles_gray() -> None:
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.2, 0.2])
    raw = torch.rand(3, 3, 6, 6)
    fig = plots.plot_image_grid((raw - mean[:, None, None]) / std[:, None, None], labels=[1, 2, 3], mean=mean, std=std)
    render(fig)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "3"
    assert np.allclose(_image_data(fig.axes[0]), raw[0].permute(1, 2, 0).numpy(), atol=1e-6)
    gray = torch.randn(5, 1, 7, 7) * 3  # out of [0, 1] without statistics: scaled, not clipped
    fig = plots.plot_image_grid(gray)
    render(fig)
    assert len(fig.axes) == 5 and fig.axes[0].get_title() == ""
    shown = _image_data(fig.axes[0])
    assert shown.shape == (7, 7) and np.isclose(shown.min(), 0) and np.isclose(shown.max(), 1)
    with pytest.raises(ValueError, match="labels"):
        plots.plot_image_grid(gray, labels=[1, 2])


def test_segmentation_panels_errors_and_scores() -> None:
    target = torch.zeros(1, 16, 16)
    target[:, :, :8] = 1  # left half positive
    pred = torch.zeros(1, 16, 16)
    pred[:, :, 4:12] = 0.9  # 4 columns right, 4 columns false positive, 4 columns missed
    image = torch.rand(1, 16, 16)
    fig = plots.plot_segmentation(image, target, pred, threshold=0.5, title="slice 24")
    render(fig)
    assert len(fig.axes) == 4
    # IoU = 4/12, Dice = 2*4/(8+8)
    assert "IoU 0.333" in fig.get_suptitle() and "Dice 0.500" in fig.get_suptitle()
    assert fig.get_suptitle().startswith("slice 24")
    errors = _image_data(fig.axes[3])  # (H, W, 3)
    fp, fn, ok = errors[0, 10], errors[0, 2], errors[0, 6]
    assert fp[0] > 0.9 and fp[2] < 0.2  # red
    assert fn[2] > 0.9 and fn[0] < 0.2  # blue
    assert np.allclose(ok, ok[0]) and ok[0] <= 0.6  # the dimmed image
    assert "FP 64" in fig.axes[3].get_title() and "FN 64" in fig.axes[3].get_title()


def test_segmentation_perfect_empty_and_rgb_uint8() -> None:
    empty = torch.zeros(1, 8, 8)
    fig = plots.plot_segmentation(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), empty, empty)
    render(fig)
    assert "IoU 1.000" in fig.get_suptitle() and "Dice 1.000" in fig.get_suptitle()
    with pytest.raises(ValueError, match="same H and W"):
        plots.plot_segmentation(torch.rand(1, 8, 8), empty, torch.zeros(1, 8, 9))


def test_augmentations_from_tensor_and_callable() -> None:
    orig = torch.rand(10, 1, 12, 12)
    fig = plots.plot_augmentations(orig, orig.flip(-1), n=6)
    render(fig)
    assert len(fig.axes) == 2 * 6
    assert fig.axes[0].get_ylabel() == "original" and fig.axes[6].get_ylabel() == "augmented 1"
    assert np.allclose(_image_data(fig.axes[6]), orig[0, 0].flip(-1).numpy())
    calls = []

    def crop(x: torch.Tensor):
        calls.append(x.shape[0])
        return x[..., 2:10, 2:10], None  # (x, y) like a TileSampler batch

    fig = plots.plot_augmentations(orig, crop, n=4, n_versions=3)
    render(fig)
    assert calls == [4, 4, 4] and len(fig.axes) == 4 * 4
    assert _image_data(fig.axes[-1]).shape == (8, 8)
    stacked = torch.rand(2, 3, 3, 5, 5)  # K=2 versions of 3 RGB images
    fig = plots.plot_augmentations(torch.rand(3, 3, 5, 5), stacked, n=8)
    render(fig)
    assert len(fig.axes) == 3 * 3


def test_image_grid_soft_labels_and_score_predictions() -> None:
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    names = ["cat", "dog", "ship"]
    soft = torch.tensor([[0.62, 0.38, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9]])
    scores = torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])  # logits: cat, cat, ship
    fig = plots.plot_image_grid(x, labels=soft, preds=scores, class_names=names)
    render(fig)
    texts = [ax.title.get_text() for ax in fig.axes]
    assert texts == ["cat .62 + dog .38 / cat", "dog / cat", "ship .90 + cat .10 / ship"], texts
    assert to_rgba(fig.axes[1].title.get_color())[0] > 0.6  # wrong: red
    with pytest.raises(ValueError, match=r"10 entries but there are 3 images .*\[3, num_classes\]"):
        plots.plot_image_grid(x, labels=torch.zeros(10))


def test_augmentations_unnormalise_and_show_mixed_labels() -> None:
    from course.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, Augment, augment_batch

    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(6)
    aug = Augment(crop_pad=0, flip=False, cutmix_alpha=1.0)
    g = torch.Generator().manual_seed(0)
    fig = plots.plot_augmentations(
        x, lambda xb: augment_batch(xb, y[: len(xb)], aug, mean=CIFAR10_MEAN, std=CIFAR10_STD, generator=g),
        n=6, n_versions=2, mean=CIFAR10_MEAN, std=CIFAR10_STD, class_names=CIFAR10_CLASSES)
    render(fig)
    titles = [ax.title.get_text() for ax in fig.axes[6:]]
    assert all(titles) and any("+" in t for t in titles), titles  # cutmix labels shown
    # un-normalised with the statistics: pixels not pasted from a partner are the originals
    shown = _image_data(fig.axes[6]).transpose(2, 0, 1)
    assert np.isclose(shown, x[0].numpy() / 255, atol=1e-5).mean() > 0.3


def test_attention_overlay_rows_scaled_and_stretched_over_the_image() -> None:
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    rollout = torch.rand(3, 4, 4) * 5  # a 4 x 4 patch grid per image
    last = torch.rand(3, 4, 4)
    fig = plots.plot_attention_overlay(x, {"rollout": rollout, "last block": last}, labels=[0, 1, 2],
                                       preds=[0, 2, 2], class_names=["cat", "dog", "ship"], title="maps")
    render(fig)
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 9 and len(fig.axes) == 10  # 3 rows of 3, one colour bar
    assert grid[0].get_title() == "cat / cat" and grid[1].get_title() == "dog / ship"
    assert grid[3].get_ylabel() == "rollout" and grid[6].get_ylabel() == "last block"
    over = grid[3].get_images()[1]  # the map over the grayed image, stretched to its 16 x 16 pixels
    assert np.allclose(np.asarray(over.get_array()), (rollout[0] / rollout[0].max()).numpy())
    assert tuple(over.get_extent()) == (-0.5, 15.5, 15.5, -0.5)
    fig = plots.plot_attention_overlay(x, torch.zeros(3, 2, 2))  # one row; all-zero maps stay zero, no warning
    render(fig)
    with pytest.raises(ValueError, match=r"\[N, h, w\] with N = 3"):
        plots.plot_attention_overlay(x, torch.rand(2, 4, 4))


def test_position_similarity_grid_of_heatmaps() -> None:
    gh, gw = 2, 3
    sim = torch.rand(gh, gw, gh, gw) * 2 - 1
    fig = plots.plot_position_similarity(sim, title="positions")
    render(fig)
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == gh * gw and len(fig.axes) == gh * gw + 1
    assert np.allclose(_image_data(grid[1 * gw + 2]), sim[1, 2].numpy())  # cell (1, 2) shows sim[1, 2]
    assert grid[0].get_images()[0].get_clim() == (-1.0, 1.0)
    assert grid[gw].get_ylabel() == "1" and grid[gh * gw - 1].get_xlabel() == "2"
    with pytest.raises(ValueError, match=r"\[gh, gw, gh, gw\]"):
        plots.plot_position_similarity(torch.rand(4, 4))
