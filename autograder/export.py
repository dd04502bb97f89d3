"""Export an assignment's gradebook (after autograding and any manual grading) as CSV."""
from __future__ import annotations

from pathlib import Path

from nbgrader.api import Gradebook

from autograder import config as cfg
from autograder.grade import Result, _read_scores, format_table, write_csv


def export(assignment: str, *, course_dir: Path | None = None, db_url: str | None = None,
           csv_path: Path | None = None) -> int:
    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    db_url = db_url or cfg.default_db_url(course_dir)
    with Gradebook(db_url, "attention-course") as gb:
        students = sorted(s.student.id for s in gb.find_assignment(assignment).submissions)
    results = []
    for sid in students:
        r = Result(sid)
        _read_scores(db_url, assignment, sid, r)
        results.append(r)
    path = csv_path or course_dir / f"grades-{assignment}.csv"
    write_csv(results, path, assignment)
    print(format_table(results, assignment))
    print(f"\nCSV: {path}")
    return 0
