"""Grade one student in a process of its own: ``python -m autograder.worker ...``.

The parent (:mod:`autograder.grade`) runs one worker per student with a wall-clock limit,
so a submission that hangs, floods or crashes nbgrader itself affects only its own row.
The worker autogrades, then writes the feedback HTML, and exits 0 only if both worked. Its
sandboxed kernels import a ``course`` package without the answers of the assignment
(:func:`autograder.student_copy.kernel_package`), made for this worker and removed after it.
With ``$AUTOGRADER_PARENT_PID`` set it dies with the thread that started it (Linux), so
a grading run that is killed leaves no worker behind (its sandboxed kernel dies with it).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path


def _die_with_parent() -> None:
    """SIGKILL this process when its parent goes (``prctl(PR_SET_PDEATHSIG)``); exit at once
    if the parent named by ``$AUTOGRADER_PARENT_PID`` is already gone."""
    want = os.environ.get("AUTOGRADER_PARENT_PID", "")
    if not want.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(want):
        os._exit(1)


if __name__ == "__main__":
    _die_with_parent()  # first, before the slow imports below

from autograder.nbgrader_api import make_api  # noqa: E402
from autograder.student_copy import kernel_package  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m autograder.worker")
    ap.add_argument("course_dir", type=Path)
    ap.add_argument("assignment")
    ap.add_argument("student")
    ap.add_argument("--db-url", required=True)
    ap.add_argument("--cell-timeout", type=int, required=True)
    ap.add_argument("--result", type=Path, required=True, help="JSON file to write the outcome to")
    ap.add_argument("--sandbox", action="store_true", help="run the kernel in bubblewrap")
    ap.add_argument("--checks-dir", type=Path, default=None)
    a = ap.parse_args(argv)

    # a private folder of the sandbox's kind (cg<pid>-*, 0700): a later grader sweeps it if this one is killed
    from autograder.sandbox import _private_root

    with tempfile.TemporaryDirectory(prefix=f"cg{os.getpid()}-", dir=_private_root()) as tmp:
        kernel_course = kernel_package(Path(tmp), a.assignment) if a.sandbox else None
        return _grade(a, kernel_course)


def _grade(a: argparse.Namespace, kernel_course: Path | None) -> int:
    api = make_api(a.course_dir, db_url=a.db_url, cell_timeout_s=a.cell_timeout, sandbox=a.sandbox,
                   checks_dir=a.checks_dir, kernel_course=kernel_course)
    outcome: dict = {"autograde": False, "feedback": False, "error": ""}
    res = api.autograde(a.assignment, a.student, force=True, create=True)
    sys.stdout.write(res.get("log", ""))
    outcome["autograde"] = bool(res.get("success"))
    if not outcome["autograde"]:
        outcome["error"] = (res.get("error") or "").strip()[-4000:] or _last_error(res.get("log", ""))
    else:
        fb = api.generate_feedback(a.assignment, a.student, force=True)
        sys.stdout.write(fb.get("log", ""))
        outcome["feedback"] = bool(fb.get("success"))
        if not outcome["feedback"]:
            outcome["error"] = "feedback: " + ((fb.get("error") or "").strip()[-4000:] or _last_error(fb.get("log", "")))
    a.result.write_text(json.dumps(outcome))
    return 0 if outcome["autograde"] and outcome["feedback"] else 1


def _last_error(log: str) -> str:
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    return errors[-1] if errors else "nbgrader reported a failure (see the log)"


if __name__ == "__main__":
    raise SystemExit(main())
