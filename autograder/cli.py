"""Command line: ``python -m autograder {release,grade,report,export,demo,student-copy,mutants}``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autograder import config as cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("release", help="build assignments/ (student version) and solutions/ from source/")
    p.add_argument("--check", action="store_true", help="only check that the committed folders are up to date")

    p = sub.add_parser("grade", help="autograde a folder (one subfolder or zip per student) or a zip")
    p.add_argument("path", type=Path)
    p.add_argument("--assignment", "-a", help="assignment id (default: the only one in source/)")
    p.add_argument("--course-dir", type=Path, default=None, help="nbgrader course directory (default: this repository)")
    p.add_argument("--db-url", default=None, help="gradebook URL (default: $COURSE_DB_URL or sqlite gradebook.db in the course dir)")
    p.add_argument("--csv", type=Path, default=None, help="CSV to write (default: <course-dir>/grades-<assignment>.csv)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds per cell (default: 4x the slowest cell of the reference solution, at least 10, "
                        f"at most {cfg.CELL_TIMEOUT_S}; measured once per version of the assignment)")
    p.add_argument("--student-timeout", type=int, default=None,
                   help="seconds per student, over the worker's whole process group (default: 3x the reference's "
                        "grading time + 2 cell limits, at least 120, at most 1800)")
    p.add_argument("--unsafe", action="store_true",
                   help="run submissions without the bubblewrap sandbox (only for code you trust)")
    p.add_argument("--workers", "-j", type=int, default=None,
                   help="students graded at once on this machine (default: one per core); with --scheduler local, "
                        "the number of Dask worker processes")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="send the students to the Dask distributed scheduler at ADDRESS (tcp://host:8786), "
                        "or 'local' for a LocalCluster on this machine")
    p.add_argument("--force", action="store_true",
                   help="grade every student again, also those already graded from the same notebook and inputs")

    p = sub.add_parser("report", help="write the class report of an assignment (HTML page and PNG figures) "
                                      "from the gradebook and the verdicts recorded while grading")
    p.add_argument("assignment")
    p.add_argument("--course-dir", type=Path, default=None)
    p.add_argument("--db-url", default=None)
    p.add_argument("--out", type=Path, default=None, help="folder to write (default: <course-dir>/reports/<assignment>)")

    p = sub.add_parser("export", help="write the gradebook of an assignment as CSV")
    p.add_argument("assignment")
    p.add_argument("--course-dir", type=Path, default=None)
    p.add_argument("--db-url", default=None)
    p.add_argument("--csv", type=Path, default=None)

    p = sub.add_parser("demo", help="release, grade three sample students, print the gradebook")
    p.add_argument("--out", type=Path, default=None, help="scratch course directory (default: .demo/)")

    p = sub.add_parser("student-copy", help="build what the class receives (the class repository): the release, the "
                                           "course package without the answers of open assignments, the environment")
    p.add_argument("out", type=Path, help="folder to write (with --zip: the zip file)")
    p.add_argument("--zip", action="store_true", help="write a zip holding one folder instead of a folder")
    p.add_argument("--closed", nargs="+", default=[], metavar="ASSIGNMENT",
                   help="also ship the references that answer these assignments (besides CLOSED in "
                        "autograder/classroom.py)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = sub.add_parser("mutants", help="grade the known-wrong solutions of tests/mutants/<assignment>/ (and the "
                                      "correct variants) through the sandboxed trusted path; print the mutation score")
    p.add_argument("assignment")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these mutants (file stems)")
    p.add_argument("--unsafe", action="store_true", help="without the bubblewrap sandbox")
    p.add_argument("--folder", type=Path, default=None, help="mutant files (default: tests/mutants/<assignment>/)")

    a = ap.parse_args(argv)
    if a.cmd == "release":
        from autograder import release

        try:
            if a.check:
                problems = release.check()
                if problems:
                    print("assignments/ or solutions/ is out of date with source/; run `make release`:")
                    print("\n".join("  " + p for p in problems))
                    return 1
                print("assignments/ and solutions/ are up to date with source/")
                return 0
            release.release()
        except release.ReleaseError as e:
            print(f"release failed: {e}", file=sys.stderr)
            return 1
        print("wrote assignments/ and solutions/")
        return 0
    if a.cmd == "grade":
        from autograder.grade import grade

        results = grade(a.path, a.assignment, course_dir=a.course_dir, db_url=a.db_url, csv_path=a.csv,
                        cell_timeout=a.cell_timeout, student_timeout=a.student_timeout, unsafe=a.unsafe,
                        workers=a.workers, scheduler=a.scheduler, force=a.force)
        return 0 if results else 1
    if a.cmd == "report":
        from autograder.report import write_report

        page = write_report(a.assignment, course_dir=a.course_dir, db_url=a.db_url, out=a.out)
        print(f"class report: {page}")
        return 0
    if a.cmd == "export":
        from autograder.export import export

        return export(a.assignment, course_dir=a.course_dir, db_url=a.db_url, csv_path=a.csv)
    if a.cmd == "student-copy":
        from autograder.student_copy import StudentCopyError, build

        try:
            report = build(a.out, closed=a.closed, make_zip=a.zip, force=a.force)
        except StudentCopyError as e:
            print(f"student-copy failed: {e}", file=sys.stderr)
            return 1
        print(report.summary())
        return 0
    if a.cmd == "mutants":
        from autograder.mutants import MutantError, main as mutants_main

        try:
            return mutants_main(a.assignment, a.only, unsafe=a.unsafe, folder=a.folder)
        except MutantError as e:
            print(f"mutants: {e}", file=sys.stderr)
            return 1
    if a.cmd == "demo":
        from autograder.demo import run

        return run(a.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
