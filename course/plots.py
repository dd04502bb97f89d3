"""Plots for the notebooks: attention maps, positional encodings, training curves, scaling.

Every function returns a ``matplotlib.figure.Figure``. Figures are made without
``pyplot`` (no global figure registry, nothing to close, no "too many figures"
warning): in Jupyter a figure shows when it is the last expression of a cell, or with
``display(fig)``; in a script use ``fig.savefig(path)``. Passing ``ax=`` draws into an
existing (e.g. pyplot) axes instead. Nothing here emits warnings.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

if (
    "MPLBACKEND" not in os.environ
    and sys.platform.startswith("linux")
    and not os.environ.get("DISPLAY")
    and not os.environ.get("WAYLAND_DISPLAY")
    and "ipykernel" not in sys.modules
):
    matplotlib.use("Agg")  # headless: never try (and warn about) a GUI backend

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_positional_encoding", "plot_history", "plot_scaling"]

_MAX_TICK_LABELS = 48  # above this many tokens, label every n-th one


def _to_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor / array / nested list."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.array(x, dtype=np.float64)


def _set_token_ticks(ax: Axes, axis: str, labels: Sequence[str] | None, n: int) -> None:
    step = max(1, math.ceil(n / _MAX_TICK_LABELS))
    ticks = list(range(0, n, step))
    names = [str(labels[i]) for i in ticks] if labels is not None else [str(i) for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, rotation=90 if labels is not None else 0, fontsize=8)
    else:
        ax.set_yticks(ticks)
        ax.set_yticklabels(names, fontsize=8)


def plot_attention(
    weights: Any,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    max_heads: int = 8,
    cmap: str = "viridis",
) -> Figure:
    """Heatmap of attention weights: keys on x, queries on y, one panel per head.

    Args:
        weights: ``Tensor[Tq, Tk]`` or ``Tensor[H, Tq, Tk]`` (leading dims of size 1, e.g.
            a batch of one ``[1, H, Tq, Tk]``, are dropped).
        x_labels: ``Tk`` key tokens; y_labels: ``Tq`` query tokens.
        ax: draw a single map into this axes (only for 2-D weights).
        max_heads: show at most this many heads (the first ones).
    """
    w = _to_numpy(weights)
    while w.ndim > 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"weights must be [Tq, Tk] or [H, Tq, Tk], got shape {tuple(w.shape)}")
    H, Tq, Tk = w.shape
    for labels, n, what in ((x_labels, Tk, "x_labels (keys)"), (y_labels, Tq, "y_labels (queries)")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{what} has {len(labels)} entries but the weights have {n}")
    shown = min(H, max_heads)
    if ax is not None:
        if shown != 1:
            raise ValueError(f"ax= takes one map, but the weights have {H} heads: pass weights[h]")
        fig, axes = ax.figure, [ax]
    else:
        ncols = min(shown, 4)
        nrows = math.ceil(shown / ncols)
        size = min(max(2.5, 0.28 * max(Tq, Tk) + 1.5), 7.0)
        fig = Figure(figsize=(size * ncols + 1.0, size * nrows), layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[shown:]:
            extra.set_axis_off()
    finite = w[:shown][np.isfinite(w[:shown])]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = None
    for h in range(shown):
        a = axes[h]
        im = a.imshow(w[h], cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
        _set_token_ticks(a, "x", x_labels, Tk)
        _set_token_ticks(a, "y", y_labels, Tq)
        a.set_xlabel("key")
        a.set_ylabel("query")
        if H > 1:
            a.set_title(f"head {h}", fontsize=10)
    fig.colorbar(im, ax=axes[:shown], shrink=0.8, label="attention weight")
    if title:
        if H > 1 and ax is None:
            fig.suptitle(title + (f" (first {shown} of {H} heads)" if shown < H else ""))
        else:
            axes[0].set_title(title)
    return fig


def plot_positional_encoding(
    pe: Any, dims: Sequence[int] | None = None, title: str | None = "Sinusoidal positional encoding"
) -> Figure:
    """Heatmap of ``pe: Tensor[T, D]`` (position on y, dimension on x) and curves of a few dims."""
    p = _to_numpy(pe)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"pe must be [T, D], got shape {tuple(p.shape)}")
    T, D = p.shape
    if dims is None:
        dims = sorted({d for d in (0, 1, 4, 5, D // 2, D - 1) if 0 <= d < D})
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_map, ax_curves = fig.subplots(1, 2, width_ratios=[1.2, 1])
    lim = float(np.abs(p).max()) or 1.0
    im = ax_map.imshow(p, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax_map.set_xlabel("dimension i")
    ax_map.set_ylabel("position t")
    fig.colorbar(im, ax=ax_map, shrink=0.8)
    for d in dims:
        ax_curves.plot(np.arange(T), p[:, d], label=f"dim {d}")
    ax_curves.set_xlabel("position t")
    ax_curves.set_ylabel("PE[t, i]")
    ax_curves.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def _series(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[(step, value), ...]`` or ``[value, ...]`` -> (steps, values)."""
    vals = list(values)
    if vals and isinstance(vals[0], (tuple, list)) and len(vals[0]) == 2:
        steps = np.array([float(s) for s, _ in vals])
        ys = np.array([float(v) for _, v in vals])
    else:
        ys = np.array([float(v) for v in vals])
        steps = np.arange(len(ys), dtype=np.float64)
    return steps, ys


def _ema(y: np.ndarray, beta: float) -> np.ndarray:
    out, m = np.empty_like(y), y[0]
    for i, v in enumerate(y):
        m = beta * m + (1 - beta) * v if np.isfinite(v) else m
        out[i] = m
    return out


def _panel_of(name: str) -> str:
    if name == "lr" or name.endswith("_lr"):
        return "learning rate"
    for prefix in ("train_", "val_", "valid_", "test_", "eval_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def plot_history(
    history: Any, *, log_loss: bool = True, smooth: float = 0.9, title: str | None = None
) -> Figure:
    """Training / validation curves, one panel per quantity (``train_loss`` and ``val_loss`` share one).

    Args:
        history: a mapping ``name -> [(step, value), ...]`` or ``name -> [value, ...]``, or an
            object with ``.as_dict()`` returning one (``course.train.History``).
        log_loss: log-scale the y axis of loss panels (when all values are positive).
        smooth: EMA factor drawn over series with more than 50 points (0 disables).
    """
    data = history.as_dict() if hasattr(history, "as_dict") else history
    if not isinstance(data, Mapping):
        raise TypeError(f"history must be a mapping or have .as_dict(), got {type(history).__name__}")
    panels: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for name, values in data.items():
        steps, ys = _series(values)
        if ys.size:
            panels.setdefault(_panel_of(str(name)), []).append((str(name), steps, ys))
    n = max(len(panels), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no values recorded yet", ha="center", va="center")
    for ax, (panel, series) in zip(axes, panels.items()):
        for name, steps, ys in series:
            if ys.size > 50 and smooth > 0:
                (line,) = ax.plot(steps, ys, alpha=0.3, linewidth=0.8)
                ax.plot(steps, _ema(ys, smooth), color=line.get_color(), label=f"{name} (EMA {smooth:g})")
            else:
                ax.plot(steps, ys, marker="o" if ys.size <= 20 else None, markersize=3, label=name)
        finite = np.concatenate([ys[np.isfinite(ys)] for _, _, ys in series])
        if ("loss" in panel or panel == "learning rate") and log_loss and finite.size and (finite > 0).all():
            if finite.max() / finite.min() > 10 or "loss" in panel:
                ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _fit_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or np.unique(x[ok]).size < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _as_series_list(values: Any, n_points: int) -> list[np.ndarray]:
    arr = [np.asarray(_to_numpy(v), dtype=np.float64) for v in values]
    if arr and arr[0].ndim == 0:  # a single series of numbers
        arr = [np.asarray([float(v) for v in arr])]
    for a in arr:
        if a.shape != (n_points,):
            raise ValueError(f"each series needs {n_points} values (one per sequence length), got {a.shape}")
    return arr


def plot_scaling(
    seq_lens: Sequence[int],
    times_ms: Any,
    mems_mb: Any | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Time (and memory) against sequence length on log-log axes, fitted slope in the legend.

    ``times_ms``/``mems_mb``: one series (``[value per seq_len]``) or several (one per label);
    NaN marks a missing point (e.g. out of memory). A slope of 2 means O(T^2).
    """
    x = np.asarray(seq_lens, dtype=np.float64)
    times = _as_series_list(times_ms, x.size)
    mems = _as_series_list(mems_mb, x.size) if mems_mb is not None else []
    names = list(labels) if labels is not None else [f"series {i}" for i in range(len(times))]
    if len(names) < len(times):
        raise ValueError(f"{len(times)} series but {len(names)} labels")
    panels = [("time (ms)", times)] + ([("peak memory (MB)", mems)] if mems else [])
    fig = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (ylabel, series) in zip(axes, panels):
        drawn = False
        for name, y in zip(names, series):
            slope = _fit_slope(x, y)
            label = name if slope is None else f"{name} (slope {slope:.2f})"
            ok = np.isfinite(y) & (y > 0)
            if ok.any():
                ax.plot(x[ok], y[ok], marker="o", label=label)
                drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------
# Vision: image grids, segmentation results, augmentation previews
# ---------------------------------------------------------------------------------------

__all__ += ["plot_image_grid", "plot_segmentation", "plot_augmentations"]

_GOOD, _BAD = "#1a9641", "#d7191c"  # title colours: right / wrong prediction
_FP_RGB, _FN_RGB = (1.0, 0.15, 0.1), (0.1, 0.55, 1.0)  # error overlay: false positive / negative


def _as_images(images: Any, mean: Any = None, std: Any = None) -> np.ndarray:
    """``[N, C, H, W]`` (or ``[N, H, W]``, C in {1, 3}) uint8 / float -> float ``[N, H, W, C]`` in [0, 1].

    uint8 is divided by 255; floats are un-normalised with ``mean``/``std`` (per channel) when
    given, else used as they are when in [0, 1] and min-max scaled per image otherwise.
    """
    raw = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    is_uint8 = raw.dtype == np.uint8
    x = raw.astype(np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3 (or [N, H, W]), got shape {tuple(raw.shape)}")
    if is_uint8:
        x = x / 255.0
    elif mean is not None or std is not None:
        m = np.asarray(_to_numpy(mean if mean is not None else 0.0)).reshape(1, -1, 1, 1)
        s = np.asarray(_to_numpy(std if std is not None else 1.0)).reshape(1, -1, 1, 1)
        x = x * s + m
    elif np.isfinite(x).all() and (x.min() < 0 or x.max() > 1):
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    x = np.clip(np.nan_to_num(x), 0.0, 1.0)  # imshow logs a warning when RGB is out of range
    return x.transpose(0, 2, 3, 1)


def _show(ax: Axes, img: np.ndarray) -> None:
    """Draw one ``[H, W, C]`` image in [0, 1] without ticks."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _class_name(c: Any, class_names: Sequence[str] | None) -> str:
    i = int(c)
    if class_names is not None and 0 <= i < len(class_names):
        return str(class_names[i])
    return str(i)


def _label_texts(values: Any, n: int, what: str, class_names: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """Titles and top classes of ``n`` labels: class indices ``[n]``, or scores / soft labels
    ``[n, K]`` (a mixed label reads ``"cat .62 + dog .38"``; scores of a prediction, argmax)."""
    a = _to_numpy(values)
    if a.ndim == 2 and a.shape[0] == n and a.shape[1] > 1:
        top = [int(i) for i in a.argmax(1)]
        if what == "preds":
            return [_class_name(c, class_names) for c in top], top
        texts = []
        for row in a:
            order = [int(i) for i in np.argsort(-row, kind="stable")[:2]]
            parts = [(c, float(row[c])) for c in order if float(row[c]) >= 0.005]
            if len(parts) <= 1 or parts[0][1] >= 0.995:
                texts.append(_class_name(order[0], class_names))
            else:
                weights = (f"{w:.2f}".lstrip("0") for _, w in parts)  # 0.62 -> .62 (every w < 1 here)
                texts.append(" + ".join(f"{_class_name(c, class_names)} {w}" for (c, _), w in zip(parts, weights)))
        return texts, top
    flat = a.reshape(-1)
    if flat.shape[0] != n:
        raise ValueError(
            f"{what} has {flat.shape[0]} entries but there are {n} images "
            f"(give {n} class indices, or a [{n}, num_classes] array of scores or soft labels)"
        )
    top = [int(v) for v in flat]
    return [_class_name(c, class_names) for c in top], top


def plot_image_grid(
    images: Any,
    labels: Any = None,
    preds: Any = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    mean: Any = None,
    std: Any = None,
    title: str | None = None,
) -> Figure:
    """A grid of images, one axes per image, with their labels (and predictions).

    Args:
        images: ``Tensor[N, C, H, W]`` (C = 1 or 3; ``[N, H, W]`` for grayscale), uint8 in
            0..255 or float. Floats are un-normalised as ``x * std + mean`` when ``mean`` /
            ``std`` are given (per channel, e.g. the CIFAR-10 statistics), used as they are
            when in [0, 1], and min-max scaled per image otherwise.
        labels: ``N`` class indices, or soft labels ``[N, K]`` (a mixup / cutmix label reads
            "cat .62 + dog .38"); preds: ``N`` predicted indices or scores ``[N, K]`` (argmax).
            With both, titles read "label / pred", green when the prediction is the label's
            top class and red otherwise.
        class_names: names for the indices.
        ncols: images per row.
    """
    x = _as_images(images, mean, std)
    N = x.shape[0]
    lab = None if labels is None else _label_texts(labels, N, "labels", class_names)
    pred = None if preds is None else _label_texts(preds, N, "preds", class_names)
    if N == 0:
        raise ValueError("plot_image_grid: no images")
    ncols = max(1, min(ncols, N))
    nrows = math.ceil(N / ncols)
    titled = lab is not None or pred is not None
    fig = Figure(figsize=(1.5 * ncols, (1.5 + 0.3 * titled) * nrows + 0.4 * bool(title)), layout="constrained")
    for i in range(N):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _show(ax, x[i])
        if lab is not None and pred is not None:
            right = lab[1][i] == pred[1][i]
            ax.set_title(f"{lab[0][i]} / {pred[0][i]}", fontsize=8, color=_GOOD if right else _BAD)
        elif lab is not None:
            ax.set_title(lab[0][i], fontsize=8)
        elif pred is not None:
            ax.set_title(pred[0][i], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _plane(x: Any, what: str) -> np.ndarray:
    """``[H, W]`` float from ``[H, W]``, ``[1, H, W]`` or ``[1, 1, H, W]``."""
    a = _to_numpy(x)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be [1, H, W] or [H, W], got shape {tuple(_to_numpy(x).shape)}")
    return a


def plot_segmentation(
    image: Any,
    target: Any,
    pred: Any,
    threshold: float = 0.5,
    title: str | None = None,
) -> Figure:
    """Image, ground truth, prediction and errors side by side; IoU and Dice in the title.

    Class 1 is the positive class (for ISBI 2012: membrane).

    Args:
        image: ``Tensor[1, H, W]`` or ``[3, H, W]`` (uint8, or float: min-max scaled when
            outside [0, 1]).
        target: ``Tensor[1, H, W]`` in {0, 1}.
        pred: ``Tensor[1, H, W]``: probabilities, or 0/1; positive where ``pred >= threshold``.
        threshold: decision threshold on ``pred``.

    Panels: the image; the truth; the prediction (probabilities in gray, the
    ``threshold`` contour in red); the errors over the image: false positives in red,
    false negatives in blue.
    """
    raw = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    img = _as_images((raw[None] if raw.ndim == 2 else raw)[None])[0]  # (H, W, C) in [0, 1]
    t = _plane(target, "target") >= 0.5
    p_raw = _plane(pred, "pred")
    if t.shape != img.shape[:2] or p_raw.shape != img.shape[:2]:
        raise ValueError(
            f"image {img.shape[:2]}, target {t.shape} and pred {p_raw.shape} must have the same H and W"
        )
    p = p_raw >= threshold
    inter, union = np.logical_and(p, t).sum(), np.logical_or(p, t).sum()
    total = p.sum() + t.sum()
    iou = inter / union if union else 1.0  # both empty: perfect
    dice = 2 * inter / total if total else 1.0
    fp, fn = p & ~t, ~p & t
    H, W = t.shape
    fig = Figure(figsize=(12.5, 3.6 * H / max(W, 1) + 0.6), layout="constrained")
    axes = fig.subplots(1, 4)
    _show(axes[0], img)
    axes[0].set_title("image")
    axes[1].imshow(t, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title(f"truth ({t.mean():.1%} positive)")
    probs = np.clip(np.nan_to_num(p_raw), 0.0, 1.0)
    axes[2].imshow(probs, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if 0 < threshold < 1 and probs.min() < threshold < probs.max():
        axes[2].contour(probs, levels=[threshold], colors=[_BAD], linewidths=0.6)
    axes[2].set_title(f"prediction (>= {threshold:g}: {p.mean():.1%})")
    gray = img.mean(axis=-1, keepdims=True)
    over = np.repeat(gray, 3, axis=-1) * 0.6
    over[fp] = _FP_RGB
    over[fn] = _FN_RGB
    axes[3].imshow(over, interpolation="nearest")
    axes[3].set_title(f"errors: FP {fp.sum()} (red), FN {fn.sum()} (blue)", fontsize=10)
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle((f"{title}: " if title else "") + f"IoU {iou:.3f}, Dice {dice:.3f}")
    return fig


def plot_augmentations(
    original: Any,
    augmented: Any,
    n: int = 8,
    n_versions: int = 3,
    title: str | None = "augmentations",
    mean: Any = None,
    std: Any = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Originals on the top row, augmented versions below, one column per image.

    Args:
        original: ``Tensor[N, C, H, W]`` (the first ``n`` are shown).
        augmented: ``Tensor[N, C, h, w]`` (one row), ``Tensor[K, N, C, h, w]`` (K rows), or a
            callable ``f(original[:n]) -> Tensor[n, C, h, w]`` (or a tuple whose first item is
            that, e.g. ``(x, y)``) called ``n_versions`` times, one row each. Sizes may differ
            from the originals (e.g. crops).
        n: columns shown.
        n_versions: rows of augmented versions when ``augmented`` is a callable.
        mean, std: per-channel statistics to un-normalise float augmented images (as in
            :func:`plot_image_grid`); without them a float image outside [0, 1] is min-max
            scaled on its own.
        class_names: when the callable returns ``(x, y)``, each augmented image is titled
            with its label ``y`` (indices, or soft labels ``[n, K]`` after mixup / cutmix).

    Pass the same images in both: e.g. ``lambda x: augment_batch(x, y, aug, mean=m, std=s)``
    over a fixed batch, not batches of a shuffling loader, or the columns will not match.
    """
    shown = min(n, int(original.shape[0]))
    if shown < 1:
        raise ValueError("plot_augmentations: no images")
    orig = original[:shown]
    rows, row_labels = [], []
    if callable(augmented):
        for _ in range(n_versions):
            out = augmented(orig)
            rows.append(out[0] if isinstance(out, (tuple, list)) else out)
            row_labels.append(out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None)
    else:
        aug = augmented.detach().cpu() if hasattr(augmented, "detach") else np.asarray(augmented)
        rows = [aug[k][:shown] for k in range(aug.shape[0])] if aug.ndim == 5 else [aug[:shown]]
        row_labels = [None] * len(rows)
    grids = [_as_images(orig)] + [_as_images(r, mean, std) for r in rows]
    for k, g in enumerate(grids[1:], start=1):
        if g.shape[0] != shown:
            raise ValueError(f"augmented row {k} has {g.shape[0]} images, expected {shown}")
    fig = Figure(figsize=(1.5 * shown, 1.55 * len(grids) + 0.4), layout="constrained")
    axes = fig.subplots(len(grids), shown, squeeze=False)
    for r, g in enumerate(grids):
        texts = None
        if r > 0 and row_labels[r - 1] is not None and class_names is not None:
            texts = _label_texts(row_labels[r - 1], shown, "labels", class_names)[0]
        for c in range(shown):
            _show(axes[r, c], g[c])
            if texts is not None:
                axes[r, c].set_title(texts[c], fontsize=7)
        axes[r, 0].set_ylabel("original" if r == 0 else f"augmented {r}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


__all__ += ["plot_attention_overlay", "plot_position_similarity"]


def plot_attention_overlay(
    images: Any,
    maps: Any,
    labels: Any = None,
    preds: Any = None,
    class_names: Sequence[str] | None = None,
    mean: Any = None,
    std: Any = None,
    alpha: float = 0.6,
    cmap: str = "inferno",
    title: str | None = None,
) -> Figure:
    """Images on the top row and, under each, attention maps drawn over it (e.g. a ViT's attention rollout).

    Args:
        images: ``Tensor[N, C, H, W]`` (as :func:`plot_image_grid`: uint8, or float un-normalised with
            ``mean`` / ``std``).
        maps: ``Tensor[N, h, w]`` (one row of overlays), or ``{row name: Tensor[N, h, w]}`` (one row each):
            any non-negative map over the image, e.g. a patch grid (``h, w`` need not be ``H, W``: the map is
            stretched over the image with bilinear interpolation). Each map is divided by its own maximum,
            so the colour bar reads "share of the image's largest weight".
        labels, preds, class_names: titles of the top row, as in :func:`plot_image_grid` (a right
            prediction in green, a wrong one in red).
        alpha: opacity of the maps over the grayed image.
    """
    x = _as_images(images, mean, std)  # (N, H, W, C) in [0, 1]
    N, H, W = x.shape[:3]
    rows = dict(maps) if isinstance(maps, Mapping) else {"attention": maps}
    arrays = {}
    for name, m in rows.items():
        a = _to_numpy(m)
        if a.ndim != 3 or a.shape[0] != N:
            raise ValueError(f"maps {name!r} must be [N, h, w] with N = {N} images, got shape {tuple(a.shape)}")
        peak = np.nanmax(a, axis=(1, 2), keepdims=True) if a.size else a
        arrays[name] = np.nan_to_num(a / np.where(peak > 0, peak, 1.0))
    if N == 0:
        raise ValueError("plot_attention_overlay: no images")
    lab = None if labels is None else _label_texts(labels, N, "labels", class_names)
    pred = None if preds is None else _label_texts(preds, N, "preds", class_names)
    fig = Figure(figsize=(1.6 * N + 1.2, 1.7 * (1 + len(arrays)) + 0.4 * bool(title)), layout="constrained")
    axes = fig.subplots(1 + len(arrays), N, squeeze=False)
    im = None
    for i in range(N):
        _show(axes[0, i], x[i])
        if lab is not None and pred is not None:
            right = lab[1][i] == pred[1][i]
            axes[0, i].set_title(f"{lab[0][i]} / {pred[0][i]}", fontsize=8, color=_GOOD if right else _BAD)
        elif lab is not None or pred is not None:
            axes[0, i].set_title((lab or pred)[0][i], fontsize=8)
        gray = x[i].mean(axis=-1)
        for r, a in enumerate(arrays.values(), start=1):
            ax = axes[r, i]
            ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            im = ax.imshow(a[i], cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear",
                           extent=(-0.5, W - 0.5, H - 0.5, -0.5))
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=9)
    for r, name in enumerate(arrays, start=1):
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.9, label="share of the image's largest weight")
    if title:
        fig.suptitle(title)
    return fig


def plot_position_similarity(sim: Any, title: str | None = None, cmap: str = "viridis") -> Figure:
    """The ViT paper's figure of learned position embeddings: a ``gh x gw`` grid of ``gh x gw`` heatmaps.

    Args:
        sim: ``Tensor[gh, gw, gh, gw]``, ``sim[r, c, r2, c2]`` the cosine similarity of the embedding of the
            patch at grid row ``r``, column ``c`` with that of patch ``(r2, c2)``. The small map at grid
            cell ``(r, c)`` is ``sim[r, c]``; the colour scale runs from -1 to 1, shared by all.
    """
    s = _to_numpy(sim)
    if s.ndim != 4 or s.shape[:2] != s.shape[2:]:
        raise ValueError(f"sim must be [gh, gw, gh, gw], got shape {tuple(s.shape)}")
    gh, gw = s.shape[:2]
    cell = min(1.0, 9.0 / max(gh, gw))
    fig = Figure(figsize=(cell * gw + 1.6, cell * gh + 0.8 + 0.3 * bool(title)), layout="constrained")
    axes = fig.subplots(gh, gw, squeeze=False)
    im = None
    for r in range(gh):
        for c in range(gw):
            ax = axes[r, c]
            im = ax.imshow(s[r, c], cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == gh - 1:
                ax.set_xlabel(str(c), fontsize=8)
            if c == 0:
                ax.set_ylabel(str(r), fontsize=8, rotation=0, ha="right", va="center")
    fig.supxlabel("input patch column", fontsize=10)
    fig.supylabel("input patch row", fontsize=10)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="cosine similarity")
    if title:
        fig.suptitle(title)
    return fig
