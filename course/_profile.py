"""Profile resolution: the part of :mod:`course.profile` that :mod:`course.device` needs.

Kept apart so that the import graph of ``course`` has no cycle: ``course.device`` imports
this module, and ``course.profile`` imports both (its :func:`~course.profile.describe`
reports the device). Import from :mod:`course.profile`, which re-exports everything here.
"""

from __future__ import annotations

import os
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
