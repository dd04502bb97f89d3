"""Run profiles: one notebook, three budgets.

Every training cell takes its sizes from the current profile, so the same notebook
runs in seconds while autograding and for hours on a GPU:

- ``quick``: autograding, CI and nbval. Seconds on CPU, synthetic or tiny data.
- ``cpu``:   a student without a GPU. Minutes, smaller models, real data.
- ``full``:  a CUDA GPU. The targets quoted in the README.

Resolution order (first match wins):

1. ``COURSE_PROFILE`` environment variable (``quick``, ``cpu`` or ``full``);
2. ``NBGRADER_EXECUTION`` set (nbgrader sets it to ``autograde`` or ``validate``) -> ``quick``;
3. ``full`` if CUDA is available, else ``cpu``.

The result is not cached: tests and notebooks may change the environment, and the
lookup is cheap.

Example::

    from course.profile import pick
    epochs = pick(quick=1, cpu=5, full=40)
"""

from __future__ import annotations

import sys
import types

import torch

# profile() and pick() live in course._profile, which course.device imports too: that way
# describe() can import course.device at the top and the import graph has no cycle.
from course._profile import ENV_NBGRADER, ENV_PROFILE, PROFILES, Profile, pick, profile  # noqa: F401
from course.device import device_name, get_device


def describe() -> str:
    """One line for the top of a notebook: profile, device name and torch version."""
    device = get_device()
    return f"profile={profile()} | device={device_name(device)} | torch {torch.__version__}"


class _CallableModule(types.ModuleType):
    """Lets ``course.profile()`` (the module, as DESIGN.md writes it) mean ``profile()``."""

    def __call__(self) -> Profile:
        return profile()


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Profile", "PROFILES", "profile", "pick", "describe"]
