"""Construct nbgrader's Python API with the course configuration."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from autograder import config as cfg


def _venv_on_path() -> None:
    """nbgrader shells out to ``alembic`` and Jupyter kernels to ``python``: make both
    resolve to this interpreter's environment even when it is not activated."""
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def make_config(course_dir: Path, **kwargs) -> Config:
    return cfg.apply(Config(), course_dir, **kwargs)


def make_api(course_dir: Path, **kwargs) -> NbGraderAPI:
    """An ``NbGraderAPI`` rooted at ``course_dir`` (kwargs go to :func:`config.apply`)."""
    _venv_on_path()
    c = make_config(Path(course_dir), **kwargs)
    coursedir = CourseDirectory(config=c)
    return NbGraderAPI(coursedir=coursedir, config=c)
