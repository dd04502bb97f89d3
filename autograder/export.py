"""Export an assignment's gradebook (after autograding and any manual grading) as CSV.

Scores come from the gradebook. What only ``python -m autograder grade`` knows is carried
over from the CSV it wrote (the one being rewritten): the review flag and the message of
each graded student, and the rows (status, message) of the students the gradebook holds no
submission of (missing, invalid, failed or timed-out).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from nbgrader.api import Gradebook

from autograder import config as cfg
from autograder.grade import Result, _read_scores, format_table, write_csv


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def read_previous(path: Path, assignment: str) -> dict[str, dict[str, str]]:
    """Rows of ``path`` (a CSV written by ``grade`` or ``export``) for ``assignment``, by
    student; ``{}`` if there is no such file."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["student"]: r for r in rows
            if r.get("student") and (r.get("assignment") or assignment) == assignment}


def export(assignment: str, *, course_dir: Path | None = None, db_url: str | None = None,
           csv_path: Path | None = None) -> int:
    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    db_url = db_url or cfg.default_db_url(course_dir)
    path = csv_path or course_dir / f"grades-{assignment}.csv"
    previous = read_previous(path, assignment)
    with Gradebook(db_url, "attention-course") as gb:
        students = sorted(s.student.id for s in gb.find_assignment(assignment).submissions)
    results = []
    for sid in students:
        r = Result(sid)
        _read_scores(db_url, assignment, sid, r)
        old = previous.get(sid)
        # a row that says "failed" (say) while the gradebook holds a submission is older than
        # the gradebook (graded again by other means): its message no longer applies
        if old is not None and (old.get("status") or "graded") == "graded":
            r.review, r.message = old.get("review") or "", old.get("message") or ""
        results.append(r)
    # students grade() saw without leaving a submission in the gradebook: keep their rows
    graded = [r for r in results if r.status == "graded"]
    max_auto = max((r.auto_max for r in graded), default=None)
    max_total = max((r.max_score for r in graded), default=None)
    for sid in sorted(set(previous) - set(students)):
        old = previous[sid]
        status = old.get("status") or "missing"
        if status == "graded":  # its scores are not in this gradebook: nothing to back them
            print(f"note: {sid} is graded in {path.name} but has no submission in the gradebook; row dropped",
                  file=sys.stderr)
            continue
        results.append(Result(
            sid, status=status, message=old.get("message") or "", review=old.get("review") or "",
            max_score=max_total if max_total is not None else _number(old.get("max_score")),
            auto_max=max_auto if max_auto is not None else _number(old.get("auto_max"))))
    results.sort(key=lambda r: r.student)
    write_csv(results, path, assignment)
    print(format_table(results, assignment))
    print(f"\nCSV: {path}")
    return 0
