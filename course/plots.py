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
