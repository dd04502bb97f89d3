"""Devices, mixed precision, compilation, seeding, timing and memory.

Everything that differs between a laptop CPU, an Apple GPU (MPS) and a CUDA GPU lives
here, so that notebooks and :mod:`course.train` stay the same on all three:

- :func:`get_device` picks ``cuda`` > ``mps`` > ``cpu`` (always ``cpu`` in the ``quick``
  profile, so autograding is deterministic and needs no GPU).
- :func:`autocast_dtype`, :func:`autocast` and :func:`make_grad_scaler` implement mixed
  precision: bf16 on Ampere or newer (no loss scaling needed), fp16 with a
  ``GradScaler`` on older CUDA GPUs, plain fp32 on CPU and MPS.
- :func:`maybe_compile` wraps ``torch.compile`` and never crashes.
- :class:`Timer`, :func:`peak_memory_mb` and :func:`device_summary` report numbers
  together with the hardware they were measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
import time
from typing import Any

import torch
from torch import nn

from course._profile import profile


def _as_device(device: torch.device | str | None) -> torch.device:
    """Turn ``None`` (auto), a string or a device into a ``torch.device``."""
    if device is None:
        return get_device()
    return device if isinstance(device, torch.device) else torch.device(device)


def _available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type == "cpu"


# -----------------------------------------------------------------------------
# choosing a device


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        prefer: ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``. Used when available;
            otherwise (with a one-line note on stdout) the automatic choice is used.

    The automatic choice is ``cuda`` > ``mps`` > ``cpu``. In the ``quick`` profile the
    answer is always ``cpu``, whatever ``prefer`` says.
    """
    if profile() == "quick":
        return torch.device("cpu")
    if prefer is not None:
        wanted = torch.device(prefer)
        if _available(wanted):
            return wanted
        print(f"course.device: {wanted} is not available here, choosing automatically")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable name of ``device``, e.g. ``"NVIDIA H100 80GB HBM3"``."""
    device = _as_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple {platform.machine()} (MPS)"
    return f"CPU {_cpu_model()} ({os.cpu_count()} logical cores)"


def _cpu_model() -> str:
    """Best-effort CPU model name (Linux: /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# -----------------------------------------------------------------------------
# mixed precision


def autocast_dtype(device: torch.device | str | None = None) -> torch.dtype | None:
    """Lower-precision dtype for autocast on ``device``, or ``None`` for plain fp32.

    CUDA with compute capability >= 8.0 (Ampere, Hopper, ...): ``torch.bfloat16``;
    older CUDA GPUs: ``torch.float16`` (pair it with :func:`make_grad_scaler`);
    CPU and MPS: ``None``.
    """
    device = _as_device(device)
    if device.type != "cuda":
        return None
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(
    device: torch.device | str | None = None, enabled: bool = True
) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for ``device`` with :func:`autocast_dtype`; a no-op on CPU/MPS.

    >>> with autocast(device):
    ...     loss = loss_fn(model, batch)
    """
    device = _as_device(device)
    dtype = autocast_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device | str | None = None, enabled: bool = True) -> Any:
    """A ``torch.amp.GradScaler`` that is enabled only when autocast uses fp16.

    bf16 and fp32 need no loss scaling; a disabled scaler is a transparent pass-through
    (``scale(loss)`` returns ``loss``, ``step(opt)`` calls ``opt.step()``).
    """
    device = _as_device(device)
    on = enabled and autocast_dtype(device) == torch.float16
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=on)
    return torch.cuda.amp.GradScaler(enabled=on)  # pragma: no cover - older torch


# -----------------------------------------------------------------------------
# compilation


def maybe_compile(model: nn.Module, enabled: bool | None = None) -> nn.Module:
    """Return ``torch.compile(model)``, or ``model`` itself when compiling is off or fails.

    Args:
        enabled: ``None`` (default) compiles only in the ``full`` profile with CUDA.

    Never raises: if ``torch.compile`` is unavailable or fails, the eager model is
    returned and a line says so on stdout. ``torch.compile`` is lazy, so some failures
    only show on the first forward pass; :func:`course.train.fit` falls back to eager
    on those too. The compiled module shares parameters with ``model``; save
    ``model.state_dict()`` (not the compiled wrapper's, whose keys gain ``_orig_mod.``).
    """
    if enabled is None:
        enabled = profile() == "full" and torch.cuda.is_available()
    if not enabled:
        return model
    try:
        return torch.compile(model)  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - any failure means "run eager"
        print(f"course.device: torch.compile failed ({type(err).__name__}: {err}); running eager")
        return model


# -----------------------------------------------------------------------------
# seeding


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy (if installed) and torch (CPU and all GPUs).

    Args:
        deterministic: also ask for deterministic kernels: sets
            ``CUBLAS_WORKSPACE_CONFIG``, disables the cuDNN autotuner and calls
            ``torch.use_deterministic_algorithms(True, warn_only=True)``. Slower; off by
            default. (Set it before the first CUDA matmul for cuBLAS to honour it.)
    """
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


# -----------------------------------------------------------------------------
# timing


class Timer:
    """Elapsed wall time of a block in milliseconds.

    On CUDA it records CUDA events and synchronises at the end, so queued kernels are
    counted; elsewhere it uses ``time.perf_counter``.

    >>> with Timer(device) as t:
    ...     y = model(x)
    >>> print(f"{t.ms:.1f} ms")
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = _as_device(device)
        self.ms: float = float("nan")  # elapsed milliseconds, set on exit
        self._cuda = self.device.type == "cuda"

    @property
    def s(self) -> float:
        """Elapsed seconds."""
        return self.ms / 1000.0

    def __enter__(self) -> Timer:
        if self._cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            self._end_event.record()
            self._end_event.synchronize()
            self.ms = self._start_event.elapsed_time(self._end_event)
        else:
            self.ms = (time.perf_counter() - self._start) * 1000.0

    def __repr__(self) -> str:
        return f"Timer(device={self.device}, ms={self.ms:.3f})"


# -----------------------------------------------------------------------------
# memory


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    """Reset the peak-memory counter on CUDA (no-op elsewhere: see :func:`peak_memory_mb`)."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak_memory`
    (tensors only, this device). MPS: memory currently allocated by tensors. CPU: the
    peak resident set of the whole process since it started (``ru_maxrss``; cannot be
    reset, best effort; ``nan`` where the ``resource`` module is missing, e.g. Windows).
    """
    device = _as_device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.current_allocated_memory() / 2**20
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10


# -----------------------------------------------------------------------------
# memory of one computation


class TensorMemory:
    """Bytes of the tensors that torch ops create while it is active, on any device (also the CPU,
    where the allocator keeps no statistics): ``peak_mb`` (most bytes alive at once) and
    ``largest_mb`` (the biggest single tensor).

    >>> with TensorMemory() as mem:
    ...     y = layer(x)
    >>> mem.peak_mb, mem.largest_mb

    A storage counts from the op that creates it until the last tensor that views it is freed;
    views and in-place results of a counted storage are not counted again, views of tensors made
    before the block (its inputs) not at all. Autograd's saved tensors count (they stay alive).
    Slower than the computation alone (a Python call per op): measure, do not train, under it.
    """

    def __init__(self) -> None:
        self._live: dict[int, list[int]] = {}  # storage pointer -> [bytes, tensors viewing it]
        self.current = self.peak = self.largest = 0  # bytes
        self._mode: Any = None

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def largest_mb(self) -> float:
        return self.largest / 2**20

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[ptr]

    def _seen(self, out: Any, inputs: set[int]) -> None:
        import weakref

        if not isinstance(out, torch.Tensor) or out.device.type == "meta":
            return
        storage = out.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr == 0 or nbytes == 0:
            return
        if ptr in self._live:
            self._live[ptr][1] += 1
        elif ptr in inputs:
            return  # a view of (or an in-place result on) a tensor made before the block
        else:
            self._live[ptr] = [nbytes, 1]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, nbytes)
        weakref.finalize(out, self._release, ptr)

    def __enter__(self) -> TensorMemory:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                out = func(*args, **(kwargs or {}))
                flat_in = tree_flatten((args, kwargs or {}))[0]
                inputs = {t.untyped_storage().data_ptr() for t in flat_in
                          if isinstance(t, torch.Tensor) and t.device.type != "meta"}
                for t in tree_flatten(out)[0]:
                    tracker._seen(t, inputs)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
        self._mode = None


def measure(fn: Any, *args: Any, backward: bool = False, repeat: int = 3, best: bool = False,
            **kwargs: Any) -> dict[str, float]:
    """Time and memory of ``fn(*args, **kwargs)`` (and of ``.sum().backward()`` on its first output when
    ``backward``): ``{"ms": median wall time, "peak_mb": ..., "largest_mb": ...}``; ``best``: the fastest of
    the ``repeat`` runs instead of the median (on a shared machine other work only ever adds time).

    Memory comes from :class:`TensorMemory` (one extra run), so it means the same on every device:
    the peak of bytes held by tensors made during the call, not counting its inputs. On CUDA,
    ``cuda_peak_mb`` adds the allocator's own peak above what was allocated before the call.
    """
    def once() -> Any:
        out = fn(*args, **kwargs)
        if backward:
            first = out[0] if isinstance(out, (tuple, list)) else out
            first.float().sum().backward()
        return out

    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    once()  # warm-up (kernels, caches)
    times = []
    for _ in range(max(repeat, 1)):
        with Timer(device) as t:
            once()
        times.append(t.s)
    result: dict[str, float] = {"ms": 1000 * (min(times) if best else sorted(times)[len(times) // 2])}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        once()
        torch.cuda.synchronize(device)
        result["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with TensorMemory() as mem:
        out = once()
        del out
    result["peak_mb"], result["largest_mb"] = mem.peak_mb, mem.largest_mb
    return result


# -----------------------------------------------------------------------------
# reporting


def device_summary(device: torch.device | str | None = None) -> dict[str, Any]:
    """Hardware and software facts to print next to every reported number.

    Keys: ``device``, ``name``, ``capability`` (CUDA ``(major, minor)`` or ``None``),
    ``memory_gb`` (CUDA total memory or ``None``), ``torch``, ``cuda`` (toolkit
    version torch was built with, or ``None``), ``cudnn``, ``autocast_dtype``, ``profile``.
    """
    device = _as_device(device)
    is_cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if is_cuda else None
    dtype = autocast_dtype(device)
    return {
        "device": str(device),
        "name": device_name(device),
        "capability": torch.cuda.get_device_capability(device) if is_cuda else None,
        "memory_gb": round(props.total_memory / 2**30, 1) if props is not None else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if is_cuda else None,
        "autocast_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "profile": profile(),
    }


__all__ = [
    "get_device",
    "device_name",
    "autocast_dtype",
    "autocast",
    "make_grad_scaler",
    "maybe_compile",
    "seed_everything",
    "Timer",
    "reset_peak_memory",
    "peak_memory_mb",
    "TensorMemory",
    "measure",
    "device_summary",
]
