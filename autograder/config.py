"""The one place that configures nbgrader for this course.

``nbgrader_config.py`` at the top of the repository (read by the ``nbgrader`` command,
JupyterLab's Validate button and the formgrader) and the ``autograder`` package both
call :func:`apply`, so command line, GUI and ``python -m autograder`` grade alike.
"""
from __future__ import annotations

import os
from pathlib import Path

from traitlets.config import Config

#: Folder names inside a course directory (nbgrader's, except the release folder).
SOURCE = "source"
RELEASE = "assignments"
SOLUTIONS = "solutions"

#: Kernel every notebook runs under, whatever a submission's metadata says.
KERNEL_NAME = "python3"
#: Default seconds one cell may run during autograding before it is interrupted.
CELL_TIMEOUT_S = 120
#: Characters of output kept per cell; the rest is dropped with a note.
MAX_OUTPUT_CHARS = 100_000

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def repo_root() -> Path:
    """The repository (default course directory): the folder holding nbgrader_config.py."""
    here = Path(__file__).resolve().parent.parent
    return here


def default_db_url(course_dir: Path) -> str:
    """``$COURSE_DB_URL`` if set, else SQLite ``gradebook.db`` inside the course directory."""
    return os.environ.get("COURSE_DB_URL") or f"sqlite:///{Path(course_dir).resolve() / 'gradebook.db'}"


def apply(
    c: Config,
    course_dir: str | os.PathLike | None = None,
    *,
    db_url: str | None = None,
    cell_timeout_s: int = CELL_TIMEOUT_S,
    max_output_chars: int = MAX_OUTPUT_CHARS,
    sandbox: bool = False,
    checks_dir: str | os.PathLike | None = None,
    kernel_course: str | os.PathLike | None = None,
) -> Config:
    """Fill ``c`` with the course's nbgrader settings and return it."""
    root = Path(course_dir) if course_dir is not None else repo_root()
    c.CourseDirectory.root = str(root.resolve())
    c.CourseDirectory.course_id = "attention-course"
    c.CourseDirectory.source_directory = SOURCE
    c.CourseDirectory.release_directory = RELEASE
    c.CourseDirectory.db_url = db_url or default_db_url(root)
    # Only the notebooks and small data files belong to an assignment.
    c.CourseDirectory.ignore = [
        ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store", "*.tmp",
    ]

    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

    # Restore grade cells a student deleted (nbgrader >= 0.9) instead of failing them silently.
    c.OverwriteCells.add_missing_cells = True

    from autograder import preprocessors as pp
    from autograder.sanitize import (
        NeutralisePaths, SanitizeNotebook, configure as configure_sanitizing, configure_feedback,
    )
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties, CheckCellMetadata, GetGrades, IgnorePattern, LimitOutput, SaveAutoGrades,
    )

    # Autograding: our executor (survives dead kernels, caps output, pins the kernel), then
    # stderr in grade cells becomes stdout so a warning never zeroes a correct answer.
    c.Autograde.autograde_preprocessors = [
        pp.RobustExecute,
        IgnorePattern,
        ClearMetadataPreprocessor,
        pp.StderrToStdout,
        LimitOutput,
        SanitizeNotebook,  # what nbgrader saves (and the formgrader and feedback render) is inert
        NeutralisePaths,  # tracebacks and printed output name no path of the grading machine
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    for name in ("Execute", "RobustExecute"):
        c[name].kernel_name = KERNEL_NAME
        c[name].timeout = cell_timeout_s
        c[name].interrupt_on_timeout = True
    c.RobustExecute.max_output_chars = max_output_chars
    if checks_dir is not None:
        c.RobustExecute.checks_dir = str(checks_dir)
    if sandbox:
        # the student's kernel runs in bubblewrap, over ipc sockets (autograder/sandbox.py)
        c.RobustExecute.kernel_manager_class = "autograder.sandbox.SandboxKernelManager"
        if kernel_course is not None:  # the course package the kernel imports: no answers to read
            c.SandboxKernelManager.course_package = str(kernel_course)

    # Feedback: hidden tests and their tracebacks never reach the student.
    c.GenerateFeedback.preprocessors = [
        GetGrades, pp.HideHiddenTests, SanitizeNotebook, NeutralisePaths, CSSHTMLHeaderPreprocessor,
    ]
    # ... and every HTML export (feedback, formgrader) sanitises again as it renders
    configure_sanitizing(c)
    # the feedback page: the course's template (maths as MathML, no MathJax; outline by exercise)
    configure_feedback(c)
    return c
