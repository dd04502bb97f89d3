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

import os
import sys
import types
from typing import Literal, TypeVar, cast, get_args

import torch

Profile = Literal["quick", "cpu", "full"]
PROFILES: tuple[str, ...] = get_args(Profile)  # ("quick", "cpu", "full")

ENV_PROFILE = "COURSE_PROFILE"
ENV_NBGRADER = "NBGRADER_EXECUTION"

T = TypeVar("T")


def profile() -> Profile:
    """Return the current run profile: ``"quick"``, ``"cpu"`` or ``"full"``.

    Raises:
        ValueError: if ``COURSE_PROFILE`` is set to something other than a valid profile.
    """
    requested = os.environ.get(ENV_PROFILE, "").strip().lower()
    if requested:
        if requested not in PROFILES:
            raise ValueError(
                f"{ENV_PROFILE}={os.environ[ENV_PROFILE]!r} is not a valid profile; "
                f"valid profiles are: {', '.join(PROFILES)}"
            )
        return cast(Profile, requested)
    if os.environ.get(ENV_NBGRADER):
        return "quick"
    return "full" if torch.cuda.is_available() else "cpu"


def pick(*, quick: T, cpu: T, full: T) -> T:
    """Return the argument named after the current profile.

    >>> import os; os.environ["COURSE_PROFILE"] = "quick"
    >>> pick(quick=1, cpu=5, full=40)
    1
    """
    return {"quick": quick, "cpu": cpu, "full": full}[profile()]


def describe() -> str:
    """One line for the top of a notebook: profile, device name and torch version."""
    # Imported here: course.device imports this module.
    from course.device import device_name, get_device

    device = get_device()
    return f"profile={profile()} | device={device_name(device)} | torch {torch.__version__}"


class _CallableModule(types.ModuleType):
    """Lets ``course.profile()`` (the module, as DESIGN.md writes it) mean ``profile()``."""

    def __call__(self) -> Profile:
        return profile()


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Profile", "PROFILES", "profile", "pick", "describe"]
