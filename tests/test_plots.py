"""course.plots: every plot returns a Figure, quietly (no warnings, nothing on stderr)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from conftest import render
from course import plots
from course.nn import sinusoidal_positional_encoding


pytestmark = pytest.mark.usefixtures("quiet")


def test_plot_attention_single_map_with_labels():
    w = torch.rand(4, 6).softmax(-1)
    fig = plots.plot_attention(w, x_labels=list("abcdef"), y_labels=list("wxyz"), title="cross-attention")
    render(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcdef")
    assert [t.get_text() for t in ax.get_yticklabels()] == list("wxyz")
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert len(fig.axes) == 2  # map + colorbar


def test_plot_attention_heads_and_batch_of_one():
    w = torch.rand(1, 10, 5, 5).softmax(-1)
    fig = plots.plot_attention(w, title="self-attention", max_heads=6)
    render(fig)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == [f"head {h}" for h in range(6)]
    assert "first 6 of 10 heads" in fig.get_suptitle()


def test_plot_attention_long_sequence_and_masked_values():
    w = torch.rand(100, 100).softmax(-1)
    w[0] = float("nan")  # a fully masked row
    fig = plots.plot_attention(w.numpy(), x_labels=[f"t{i}" for i in range(100)])
    render(fig)
    assert len(fig.axes[0].get_xticks()) <= 50


def test_plot_attention_into_existing_axes():
    fig = Figure()
    ax = fig.subplots()
    assert plots.plot_attention(torch.rand(3, 3), ax=ax) is fig
    render(fig)
    with pytest.raises(ValueError, match="heads"):
        plots.plot_attention(torch.rand(2, 3, 3), ax=ax)


def test_plot_attention_rejects_wrong_labels():
    with pytest.raises(ValueError, match="x_labels"):
        plots.plot_attention(torch.rand(3, 4), x_labels=["a"])


def test_plot_positional_encoding():
    fig = plots.plot_positional_encoding(sinusoidal_positional_encoding(64, 32))
    render(fig)
    assert len(fig.axes[1].get_lines()) >= 4


class _History:
    def as_dict(self):
        return {
            "train_loss": [(s, 3.0 * 0.98**s + 0.01 * (s % 3)) for s in range(200)],
            "lr": [(s, 1e-3) for s in range(200)],
            "val_loss": [(50, 2.0), (100, 1.0), (150, 0.6)],
            "val_acc": [(50, 0.3), (100, 0.6), (150, 0.7)],
            "train_acc": [],
        }


def test_plot_history_from_object_and_mapping():
    fig = plots.plot_history(_History(), title="run")
    render(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["loss", "learning rate", "acc"]
    loss_ax = fig.axes[0]
    assert loss_ax.get_yscale() == "log"
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} == {"train_loss (EMA 0.9)", "val_loss"}

    fig = plots.plot_history({"loss": [1.0, 0.5, -0.1], "score": np.arange(5.0)}, log_loss=True)
    render(fig)
    assert fig.axes[0].get_yscale() == "linear"  # a non-positive loss: no log scale, no warning


def test_plot_history_empty():
    render(plots.plot_history({}))


def test_plot_history_works_with_course_train_history():
    train = pytest.importorskip("course.train")
    h = train.History(train_loss=[(0, 2.0), (1, 1.5)], metrics={"val_loss": [(1, 1.7)]})
    render(plots.plot_history(h))


def test_plot_scaling_fits_slopes():
    T = [128, 256, 512, 1024]
    quadratic = [0.001 * t**2 for t in T]
    linear = [0.01 * t for t in T]
    mems = [[1e-4 * t**2 for t in T], [1e-3 * t for t in T[:3]] + [float("nan")]]
    fig = plots.plot_scaling(T, [quadratic, linear], mems, labels=["naive", "flash"])
    render(fig)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["naive (slope 2.00)", "flash (slope 1.00)"]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    assert len(fig.axes) == 2

    fig = plots.plot_scaling(T, torch.tensor(quadratic), labels=["one"])
    render(fig)
    with pytest.raises(ValueError, match="values"):
        plots.plot_scaling(T, [[1.0, 2.0]], labels=["bad"])
