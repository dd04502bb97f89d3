"""One training loop for every notebook.

:func:`fit` runs the loop the assignments share: batches to the device, autocast and
gradient scaling where they help, gradient clipping, a scheduler step per optimizer
step, periodic evaluation, a progress bar on stdout, and three budgets (epochs, steps,
seconds) of which the first reached stops training. Everything it measures goes into a
:class:`History`, which survives Ctrl-C / "interrupt kernel".

>>> opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
>>> hist = fit(model, train_loader, optimizer=opt, epochs=pick(quick=1, cpu=5, full=40),
...            eval_fn=lambda m: {"val_acc": accuracy(m, val_loader)})
>>> hist.best("val_acc"), hist.plot()

Step numbers start at 1: the entry ``(k, loss)`` is the loss computed in the k-th
optimizer step, before that step's update.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from course.device import autocast, get_device, make_grad_scaler, maybe_compile
from course.profile import profile

# What a loss_fn / step_fn returns: a scalar loss, or the loss and extra metrics to log.
LossOutput = Union[Tensor, float, "tuple[Tensor | float, Mapping[str, Any]]"]
LossFn = Callable[[nn.Module, Any], LossOutput]
EvalFn = Callable[[nn.Module], Mapping[str, Tensor | float]]


# -----------------------------------------------------------------------------
# history


@dataclass
class History:
    """What :func:`fit` measured. Every series is a list of ``(step, value)``."""

    train_loss: list[tuple[int, float]] = field(default_factory=list)  # loss of every step
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # eval_fn results, and "train_<name>" extras from loss_fn
    lr: list[tuple[int, float]] = field(default_factory=list)  # learning rate (first param group) used at each step
    time_s: float = 0.0  # wall time spent inside fit, evaluation included, summed over calls
    steps: int = 0  # optimizer steps taken, summed over calls
    epochs: int = 0  # full passes over the training data completed, summed over calls
    stopped: str = ""  # why the last fit ended: epochs, max_steps, max_time_s, data, interrupted

    def as_dict(self) -> dict[str, list[tuple[int, float]]]:
        """All series by name: ``train_loss``, ``lr`` and every metric."""
        return {"train_loss": self.train_loss, "lr": self.lr, **self.metrics}

    def _series(self, name: str) -> list[tuple[int, float]]:
        series = self.as_dict().get(name)
        if not series:
            known = ", ".join(k for k, v in self.as_dict().items() if v) or "none yet"
            raise KeyError(f"no values recorded for {name!r}; recorded: {known}")
        return series

    def last(self, name: str) -> float:
        """Most recent value of series ``name`` (e.g. ``"val_acc"``)."""
        return self._series(name)[-1][1]

    def best(self, name: str, mode: str = "max") -> float:
        """Best value of series ``name``: the largest for ``mode="max"``, smallest for ``"min"``."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        values = [v for _, v in self._series(name)]
        return max(values) if mode == "max" else min(values)

    def plot(self) -> Any:
        """Plot every series with :func:`course.plots.plot_history`; returns what it returns."""
        from course.plots import plot_history

        return plot_history(self)

    def to_json(self, path: str | Path) -> None:
        """Write the history to ``path`` as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by :meth:`to_json`."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))

        def pairs(xs: list[list[float]]) -> list[tuple[int, float]]:
            return [(int(s), float(v)) for s, v in xs]

        return cls(
            train_loss=pairs(raw.get("train_loss", [])),
            metrics={k: pairs(v) for k, v in raw.get("metrics", {}).items()},
            lr=pairs(raw.get("lr", [])),
            time_s=float(raw.get("time_s", 0.0)),
            steps=int(raw.get("steps", 0)),
            epochs=int(raw.get("epochs", 0)),
            stopped=str(raw.get("stopped", "")),
        )


# -----------------------------------------------------------------------------
# small helpers


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def cosine_with_warmup(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr``; step it once per optimizer step.

    The factor on the base lr is ``(s + 1) / (warmup_steps + 1)`` for the first
    ``warmup_steps`` steps, then follows half a cosine from 1 down to ``min_lr_ratio``
    at ``total_steps``, and stays there.
    """
    if total_steps <= 0 or warmup_steps < 0:
        raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch to ``device``: tensors, objects with ``.to``, and (nested) tuples, lists and dicts."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    return batch


def default_loss_fn(model: nn.Module, batch: Any) -> Tensor:
    """``batch = (x, y)``: cross-entropy for integer ``y`` (logits ``(N, C, ...)``), else MSE."""
    x, y = batch
    out = model(x)
    if y.is_floating_point():
        return F.mse_loss(out, y)
    return F.cross_entropy(out, y)


def _split(output: LossOutput) -> tuple[Tensor, Mapping[str, Tensor | float]]:
    """``loss`` or ``(loss, extras)`` -> ``(loss tensor, extras)``."""
    loss, extras = output if isinstance(output, tuple) else (output, {})
    if not isinstance(loss, Tensor):
        loss = torch.tensor(float(loss))
    return loss, extras


# -----------------------------------------------------------------------------
# the loop


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    optimizer: Optimizer,
    loss_fn: LossFn | None = None,
    step_fn: LossFn | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    max_time_s: float | None = None,
    eval_fn: EvalFn | None = None,
    eval_every: int | None = None,
    scheduler: Any = None,
    device: torch.device | str | None = None,
    grad_clip: float | None = 1.0,
    amp: bool = True,
    compile: bool | None = None,
    log_every: int | None = None,
    progress: bool | None = None,
    history: History | None = None,
) -> History:
    """Train ``model`` on ``train_loader`` and return the :class:`History`.

    Args:
        model: moved to ``device``; in ``train()`` mode during steps, in ``eval()`` under
            ``torch.no_grad()`` during ``eval_fn``; its original mode is restored at the end.
        train_loader: any iterable of batches (a ``DataLoader``); batches are moved with
            :func:`to_device`.
        optimizer: built over ``model``'s parameters.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {"name": value})``; the
            extras are logged as ``train_<name>``. Default: :func:`default_loss_fn`.
            Run under autocast; fit does backward, clipping, (scaled) optimizer step.
        step_fn: instead of ``loss_fn``, a whole custom step with the same signature and
            return value that does its own backward and ``optimizer.step()``.
        epochs, max_steps, max_time_s: budgets counted within this call; training stops
            at the first one reached (at a step boundary). If none is given, one epoch.
        eval_fn: ``eval_fn(model) -> {"name": value}``, run every ``eval_every`` steps
            (default: at the end of each epoch) and once more at the end if the last
            step was not evaluated.
        scheduler: stepped (without arguments) after every optimizer step, e.g.
            :func:`cosine_with_warmup`.
        device: default :func:`course.device.get_device`.
        grad_clip: max global gradient norm, ``None`` for no clipping.
        amp: autocast (bf16, or fp16 with a GradScaler) on CUDA; no effect on CPU/MPS.
        compile: ``torch.compile`` the model; default: only in the ``full`` profile on CUDA.
            A failing compile falls back to eager with a note.
        log_every: how often (steps) losses are copied from the device, checked for
            NaN/inf and shown; default 1, or 10 on CUDA (avoids a sync every step).
        progress: show a tqdm bar on stdout; default: yes except in the ``quick`` profile.
        history: a History to continue (step numbers go on from ``history.steps``).

    Raises:
        RuntimeError: on a non-finite loss, naming the step and the last finite loss.

    Ctrl-C (or interrupting the kernel) stops training cleanly and returns the history.
    Nothing is written to stderr.
    """
    if loss_fn is not None and step_fn is not None:
        raise ValueError("give loss_fn or step_fn, not both")
    if epochs is None and max_steps is None and max_time_s is None:
        epochs = 1
    device = torch.device(device) if device is not None else get_device()
    if log_every is None:
        log_every = 10 if device.type == "cuda" else 1
    if progress is None:
        progress = profile() != "quick"
    history = history if history is not None else History()

    was_training = model.training
    model.to(device)
    model.train()
    fwd_model = maybe_compile(model, compile)
    scaler = make_grad_scaler(device, enabled=amp)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_fn = loss_fn or default_loss_fn

    def train_step(batch: Any) -> tuple[Tensor, Mapping[str, Tensor | float]]:
        """One optimizer step on ``batch``; returns the (unscaled) loss and extras."""
        if step_fn is not None:
            return _split(step_fn(fwd_model, batch))
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, enabled=amp):
            loss, extras = _split(loss_fn(fwd_model, batch))
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return loss, extras

    # Losses stay on the device until flush() copies them in one go (one sync).
    pending: list[tuple[int, Tensor, Mapping[str, Tensor | float]]] = []

    def flush() -> None:
        if not pending:
            return
        losses = torch.stack([loss.detach().float().reshape(()).to(pending[0][1].device) for _, loss, _ in pending])
        for (step, _, extras), value in zip(pending, losses.tolist()):
            if not math.isfinite(value):
                pending.clear()
                last = history.train_loss[-1] if history.train_loss else None
                last_msg = f"last finite loss {last[1]:.6g} at step {last[0]}" if last else "no finite loss before it"
                raise RuntimeError(
                    f"non-finite loss ({value}) at step {step} ({last_msg}); "
                    "try a lower learning rate, gradient clipping, or check the data and the loss"
                )
            history.train_loss.append((step, value))
            for name, v in extras.items():
                history.metrics.setdefault(f"train_{name}", []).append((step, float(v)))
        pending.clear()
        if bar is not None:
            bar.set_postfix(loss=f"{history.train_loss[-1][1]:.4g}", lr=f"{history.lr[-1][1]:.2e}", refresh=False)

    def log(msg: str) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stdout)
        else:
            print(msg, flush=True)

    last_eval_step = -1

    def evaluate() -> None:
        nonlocal last_eval_step
        assert eval_fn is not None
        flush()
        model.eval()
        with torch.no_grad():
            results = {name: float(v) for name, v in eval_fn(model).items()}
        model.train()
        for name, v in results.items():
            history.metrics.setdefault(name, []).append((history.steps, v))
        last_eval_step = history.steps
        log(f"step {history.steps} | epoch {history.epochs} | " + " ".join(f"{k} {v:.4g}" for k, v in results.items()))

    bar = _progress_bar(train_loader, epochs, max_steps, history.epochs) if progress else None
    t0 = time.perf_counter()
    time_before = history.time_s
    steps_here, epochs_here, stopped = 0, 0, ""
    try:
        while not stopped:
            n_batches = 0
            for batch in train_loader:
                n_batches += 1
                batch = to_device(batch, device)
                try:
                    loss, extras = train_step(batch)
                except Exception as err:
                    # torch.compile fails lazily, on the first forward: retry eagerly once.
                    if fwd_model is model or steps_here > 0:
                        raise
                    print(f"course.train: compiled model failed ({type(err).__name__}: {err}); running eager")
                    fwd_model = model
                    loss, extras = train_step(batch)
                history.steps += 1
                steps_here += 1
                history.lr.append((history.steps, float(optimizer.param_groups[0]["lr"])))
                _scheduler_step(scheduler, scaler)
                pending.append((history.steps, loss, extras))
                if len(pending) >= log_every:
                    flush()
                if bar is not None:
                    bar.update(1)
                if eval_fn is not None and eval_every and history.steps % eval_every == 0:
                    evaluate()
                if max_steps is not None and steps_here >= max_steps:
                    stopped = "max_steps"
                elif max_time_s is not None and time.perf_counter() - t0 >= max_time_s:
                    stopped = "max_time_s"
                if stopped:
                    break
            else:  # the epoch ran to its end
                if n_batches == 0:
                    stopped = "data"  # an empty loader, or an exhausted one-shot iterator
                    break
                history.epochs += 1
                epochs_here += 1
                if eval_fn is not None and not eval_every:
                    evaluate()
                if epochs is not None and epochs_here >= epochs:
                    stopped = "epochs"
                elif bar is not None:
                    bar.set_description(f"epoch {history.epochs + 1}")
        flush()
        if eval_fn is not None and last_eval_step != history.steps and steps_here > 0:
            evaluate()
    except KeyboardInterrupt:
        stopped = "interrupted"
        flush()  # keep the losses of the completed steps
        log(f"course.train: interrupted at step {history.steps}; returning the history so far")
    finally:
        if bar is not None:
            bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history.time_s = time_before + time.perf_counter() - t0
        history.stopped = stopped
        model.train(was_training)

    last = f", loss {history.train_loss[-1][1]:.4g}" if history.train_loss else ""
    print(f"fit: {steps_here} steps, {epochs_here} epochs in {history.time_s - time_before:.1f} s "
          f"(stopped: {stopped}){last}", flush=True)
    return history


def _scheduler_step(scheduler: Any, scaler: Any) -> None:
    """Step the scheduler; silence torch's warning when a GradScaler skipped the optimizer step."""
    if scheduler is None:
        return
    if scaler.is_enabled():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            scheduler.step()
    else:
        scheduler.step()


def _progress_bar(loader: Iterable[Any], epochs: int | None, max_steps: int | None, epochs_done: int) -> Any:
    """One tqdm bar over all steps, on stdout (nbgrader counts any stderr as a failure)."""
    with warnings.catch_warnings():  # tqdm.auto warns on stderr when ipywidgets is missing
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    total: int | None = None
    if epochs is not None and hasattr(loader, "__len__"):
        total = epochs * len(loader)  # type: ignore[arg-type]
    if max_steps is not None:
        total = min(total, max_steps) if total is not None else max_steps
    # In a terminal or a notebook, redraw often; when stdout goes to a file, rarely.
    interactive = sys.stdout.isatty() or "ipykernel" in sys.modules
    return tqdm(
        total=total,
        desc=f"epoch {epochs_done + 1}",
        unit="step",
        file=sys.stdout,
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
    )


__all__ = [
    "History",
    "fit",
    "cosine_with_warmup",
    "count_parameters",
    "to_device",
    "default_loss_fn",
]
