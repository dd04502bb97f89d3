"""Shared library of the attention & transformers course.

Every notebook imports it. Modules (one concept each):

- :mod:`course.profile`  -- ``quick`` / ``cpu`` / ``full`` budgets (``pick``)
- :mod:`course.device`   -- device, autocast dtype, seeding, timers, peak memory
- :mod:`course.train`    -- the one training loop (``fit``) and its ``History``
- :mod:`course.plots`    -- attention heatmaps, positional encodings, curves
- :mod:`course.testing`  -- checks that say what is wrong and where
- :mod:`course.data`     -- data sets (real loaders + synthetic stand-ins)
- :mod:`course.nn`       -- reference blocks that later assignments build on
- :mod:`course.vit`      -- the Vision Transformer (04's answers) and torchvision's names for it
- :mod:`course.results`  -- benchmark metrics with hardware and torch version

Submodules are imported lazily so that ``import course`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("profile", "device", "train", "plots", "testing", "data", "nn", "results")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'course' has no attribute {name!r}")


__all__ = list(_SUBMODULES)
