"""Tests for course.train (CPU only, fast)."""

from __future__ import annotations

import math
import time
from collections import namedtuple
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from course.train import History, cosine_with_warmup, count_parameters, fit, to_device


@pytest.fixture(autouse=True)
def quick_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_PROFILE", "quick")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: extra intra-op threads only contend for CI's 2 busy cores (6-10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def regression_loader(n: int = 256, batch_size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [3.0], [0.5]]) + 0.1
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)


def classification_data(n: int = 256) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like: needs the hidden layer
    return x, y


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))


def test_fit_regression_to_low_loss() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    loader = regression_loader()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = fit(model, loader, optimizer=opt, epochs=15)
    assert hist.epochs == 15 and hist.steps == 15 * len(loader) and hist.stopped == "epochs"
    assert hist.train_loss[0][1] > 1.0
    assert hist.last("train_loss") < 1e-3
    assert [s for s, _ in hist.train_loss] == list(range(1, hist.steps + 1))


def test_fit_classification_with_eval_fn_and_extras() -> None:
    x, y = classification_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = mlp()

    def loss_fn(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        xb, yb = batch
        logits = model(xb)
        return F.cross_entropy(logits, yb), {"acc": (logits.argmax(-1) == yb).float().mean()}

    eval_modes: list[tuple[bool, bool]] = []

    def eval_fn(model: nn.Module) -> dict[str, float]:
        eval_modes.append((model.training, torch.is_grad_enabled()))
        return {"val_acc": (model(x).argmax(-1) == y).float().mean().item()}

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hist = fit(model, loader, optimizer=opt, loss_fn=loss_fn, epochs=20, eval_fn=eval_fn)
    assert len(hist.metrics["val_acc"]) == 20  # once per epoch by default
    assert [s for s, _ in hist.metrics["val_acc"]] == [8 * (i + 1) for i in range(20)]
    assert hist.best("val_acc") > 0.9 and hist.best("val_acc", mode="min") < hist.best("val_acc")
    assert len(hist.metrics["train_acc"]) == hist.steps
    assert eval_modes and all(m == (False, False) for m in eval_modes)  # eval() and no_grad
    assert model.training  # mode restored


def test_eval_every_steps_and_final_eval() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hist = fit(model, regression_loader(), optimizer=opt, max_steps=25, eval_every=10, eval_fn=lambda m: {"x": 1.0})
    assert [s for s, _ in hist.metrics["x"]] == [10, 20, 25]  # 25: final eval


@pytest.mark.parametrize("max_steps", [1, 5, 13])
def test_max_steps_beats_epochs(max_steps: int) -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, regression_loader(), optimizer=opt, epochs=100, max_steps=max_steps)
    assert hist.steps == max_steps == len(hist.train_loss) == len(hist.lr)
    assert hist.stopped == "max_steps" and hist.epochs == max_steps // 8


def test_epochs_beat_max_steps() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, regression_loader(), optimizer=opt, epochs=2, max_steps=1000)
    assert hist.steps == 16 and hist.stopped == "epochs"


def test_max_time_s() -> None:
    def slow_loss(model: nn.Module, batch: Any) -> Tensor:
        time.sleep(0.02)
        x, y = batch
        return F.mse_loss(model(x), y)

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, regression_loader(), optimizer=opt, loss_fn=slow_loss, max_time_s=0.2)
    assert hist.stopped == "max_time_s"
    assert 5 <= hist.steps <= 15
    assert 0.2 <= hist.time_s < 1.0


def test_one_shot_iterator_stops_when_exhausted() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = iter(list(regression_loader()))  # cannot be iterated twice
    hist = fit(model, batches, optimizer=opt, max_steps=1000)
    assert hist.steps == 8 and hist.stopped == "data"


def test_non_finite_loss_names_the_step() -> None:
    calls = 0

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        nonlocal calls
        calls += 1
        x, y = batch
        loss = F.mse_loss(model(x), y)
        return loss * float("nan") if calls == 7 else loss

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError, match=r"non-finite loss \(nan\) at step 7 \(last finite loss [0-9.e+-]+ at step 6\)"):
        fit(model, regression_loader(), optimizer=opt, loss_fn=loss_fn, epochs=5)


def test_keyboard_interrupt_returns_partial_history(capsys: pytest.CaptureFixture[str]) -> None:
    calls = 0

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        x, y = batch
        return F.mse_loss(model(x), y)

    model = nn.Linear(4, 1)
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, regression_loader(), optimizer=opt, loss_fn=loss_fn, epochs=3, log_every=3)
    assert hist.stopped == "interrupted"
    assert hist.steps == 4 and [s for s, _ in hist.train_loss] == [1, 2, 3, 4]  # step 4 was still pending
    assert "interrupted at step 4" in capsys.readouterr().out
    assert not model.training  # mode restored


@pytest.mark.parametrize("progress", [False, True])
def test_nothing_on_stderr(capfd: pytest.CaptureFixture[str], progress: bool) -> None:
    x, y = classification_data()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = cosine_with_warmup(opt, warmup_steps=2, total_steps=16)
    fit(model, DataLoader(TensorDataset(x, y), batch_size=32), optimizer=opt, scheduler=sched, epochs=2,
        progress=progress, eval_fn=lambda m: {"val_acc": 0.5})
    out, err = capfd.readouterr()
    assert err == ""
    assert "fit: 16 steps" in out
    if not progress:  # quick profile: two eval lines and a summary
        assert len(out.splitlines()) == 3


def test_step_fn_and_batches_with_to() -> None:
    Batch = namedtuple("Batch", "x y")

    class Box:
        def __init__(self, t: Tensor) -> None:
            self.t, self.moved = t, False

        def to(self, device: torch.device) -> "Box":
            self.moved = True
            return self

    batch = {"pair": Batch(torch.ones(2), [torch.zeros(1)]), "box": Box(torch.ones(1)), "n": 3}
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved["pair"], Batch) and isinstance(moved["pair"].y, list)
    assert moved["box"].moved and moved["n"] == 3

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step_fn(model: nn.Module, batch: Any) -> float:
        opt.zero_grad()
        loss = F.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return loss.item()

    hist = fit(model, regression_loader(), optimizer=opt, step_fn=step_fn, epochs=5)
    assert hist.steps == 40 and hist.last("train_loss") < hist.train_loss[0][1] / 10
    with pytest.raises(ValueError, match="not both"):
        fit(model, [], optimizer=opt, step_fn=step_fn, loss_fn=step_fn)


def test_history_continues_across_calls() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, regression_loader(), optimizer=opt, max_steps=3)
    hist2 = fit(model, regression_loader(), optimizer=opt, max_steps=2, history=hist)
    assert hist2 is hist and hist.steps == 5 and [s for s, _ in hist.train_loss] == [1, 2, 3, 4, 5]


def test_history_json_round_trip_and_accessors(tmp_path: Path) -> None:
    h = History(
        train_loss=[(1, 2.0), (2, 1.5)],
        metrics={"val_acc": [(2, 0.5), (4, 0.75), (6, 0.6)]},
        lr=[(1, 0.1), (2, 0.05)],
        time_s=1.25, steps=2, epochs=1, stopped="epochs",
    )
    path = tmp_path / "h.json"
    h.to_json(path)
    back = History.from_json(path)
    assert back == h
    assert isinstance(back.train_loss[0], tuple)
    assert back.last("val_acc") == 0.6 and back.best("val_acc") == 0.75 and back.best("train_loss", mode="min") == 1.5
    assert set(back.as_dict()) == {"train_loss", "lr", "val_acc"}
    with pytest.raises(KeyError, match="val_acc"):
        back.last("val_loss")
    with pytest.raises(ValueError):
        back.best("val_acc", mode="up")


def test_cosine_with_warmup_shape() -> None:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay after warmup
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14:] == pytest.approx([0.1] * 6)


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 4 + 4 * 2 + 2
