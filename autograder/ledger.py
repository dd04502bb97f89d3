"""What ``grade`` records in the gradebook besides nbgrader's own rows, and the one
transaction that writes a graded student.

Two tables of the course's gradebook (created next to nbgrader's, in the same database):

- ``autograder_record``: one row per (assignment, student): the outcome of the last
  grading (status, review flag, message, seconds, the worker's host, the trusted verdicts of
  every hidden check as JSON) and what it was graded from: the SHA-256 of the submitted
  notebook(s) and of the assignment's grading inputs (release, hidden checks and the code
  they import, limits). ``grade`` skips a student whose row matches both hashes and whose
  outcome is final (:data:`FINAL`); the class report (:mod:`autograder.report`) reads the
  verdicts from here.
- ``autograder_limits``: per assignment, the time limits measured from the reference
  solution (:func:`autograder.scale.derive_limits`), keyed by the hash of the inputs they
  were measured on.
- ``autograder_release``: per assignment, the hash of the ``source/`` folder the gradebook's
  assignment was released from (``grade`` releases it again only when that changed).

:func:`commit_outcome` is the only writer of a student's rows during ``grade``: nbgrader's
submission (copied from the worker's private gradebook) or its removal, and the record, in
one transaction. A run killed at any point leaves each student either as before or fully
graded and recorded, never half-written.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from autograder.nbgrader_api import _venv_on_path
from nbgrader.api import Gradebook, Grade, Comment, MissingEntry, Student, SubmittedAssignment, SubmittedNotebook
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, insert, select

COURSE_ID = "attention-course"

#: Outcomes that a re-run keeps when the inputs are unchanged. ``failed`` and ``timeout``
#: may come from the machine (a lost worker, an overloaded node): they are graded again.
FINAL = ("graded", "invalid", "missing")

METADATA = MetaData()
RECORDS = Table(
    "autograder_record", METADATA,
    Column("assignment", String(128), primary_key=True),
    Column("student", String(128), primary_key=True),
    Column("submission_sha256", String(64), nullable=False),  # "" when nothing could be read
    Column("inputs_sha256", String(64), nullable=False),  # release + checks + their code + limits
    Column("status", String(16), nullable=False),
    Column("review", Text, nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("host", String(255), nullable=False, default=""),
    Column("graded_at", Float, nullable=False),  # Unix time
    Column("verdicts", Text, nullable=False, default="{}"),  # the trusted report: grade id -> verdict
)
RELEASES = Table(
    "autograder_release", METADATA,
    Column("assignment", String(128), primary_key=True),
    Column("source_sha256", String(64), nullable=False),  # the source/<assignment> it was released from
)
LIMITS = Table(
    "autograder_limits", METADATA,
    Column("assignment", String(128), primary_key=True),
    Column("inputs_sha256", String(64), nullable=False),
    Column("cell_timeout", Integer, nullable=False),
    Column("student_timeout", Integer, nullable=False),
    Column("slowest_cell_s", Float, nullable=False),
    Column("reference_s", Float, nullable=False),
    Column("measured_at", Float, nullable=False),
)


@dataclass
class Record:
    assignment: str
    student: str
    submission_sha256: str
    inputs_sha256: str
    status: str
    review: str = ""
    message: str = ""
    seconds: float = 0.0
    host: str = ""
    graded_at: float = 0.0
    verdicts: dict | None = None

    def row(self) -> dict:
        d = dict(self.__dict__)
        d["verdicts"] = json.dumps(self.verdicts or {})
        d["graded_at"] = self.graded_at or time.time()
        return d


def ensure_tables(db_url: str) -> None:
    _venv_on_path()  # nbgrader runs `alembic` to create the gradebook: this environment's
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)


def records(db_url: str, assignment: str) -> dict[str, Record]:
    """The records of ``assignment``, by student."""
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)
        rows = gb.db.execute(select(RECORDS).where(RECORDS.c.assignment == assignment)).mappings().all()
    out = {}
    for row in rows:
        d = dict(row)
        try:
            d["verdicts"] = json.loads(d["verdicts"] or "{}")
        except ValueError:
            d["verdicts"] = {}
        out[d["student"]] = Record(**d)
    return out


def _put_record(db, rec: Record) -> None:
    db.execute(delete(RECORDS).where(RECORDS.c.assignment == rec.assignment, RECORDS.c.student == rec.student))
    db.execute(insert(RECORDS).values(**rec.row()))


def read_private(path: Path, assignment: str, student: str) -> dict:
    """What nbgrader's autograde wrote for ``student`` in a worker's private gradebook:
    per notebook, each grade's auto score and each comment's auto comment."""
    with Gradebook(f"sqlite:///{path}", COURSE_ID) as gb:
        sub = gb.find_submission(assignment, student)
        return {
            "timestamp": sub.timestamp,
            "notebooks": {nb.name: {"late": nb.late_submission_penalty,
                                    "grades": {g.name: g.auto_score for g in nb.grades},
                                    "comments": {c.name: c.auto_comment for c in nb.comments}}
                          for nb in sub.notebooks},
        }


def _submission(gb: Gradebook, assignment: str, student: str) -> SubmittedAssignment:
    """The student's submission in ``gb``, made (like nbgrader's ``add_submission``, but not
    committed) if missing."""
    db = gb.db
    try:
        return gb.find_submission(assignment, student)
    except MissingEntry:
        pass
    try:
        stu = gb.find_student(student)
    except MissingEntry:
        stu = Student(id=student)
        db.add(stu)
    master = gb.find_assignment(assignment)
    with db.no_autoflush:
        sub = SubmittedAssignment(assignment=master, student=stu)
        for notebook in master.notebooks:
            nb = SubmittedNotebook(notebook=notebook, assignment=sub)
            for cell in notebook.grade_cells:
                Grade(cell=cell, notebook=nb)
            for cell in notebook.solution_cells:
                Comment(cell=cell, notebook=nb)
            for cell in notebook.task_cells:
                Comment(cell=cell, notebook=nb)
                Grade(cell=cell, notebook=nb)
        db.add(sub)
    db.flush()
    return sub


def _merge(gb: Gradebook, assignment: str, student: str, graded: dict) -> None:
    """Write the autograder's part of a submission (as nbgrader's SaveAutoGrades would on
    this gradebook): auto scores and comments; manual scores are kept, and a grade with a
    manual score needs a look again."""
    sub = _submission(gb, assignment, student)
    sub.timestamp = graded["timestamp"]
    for nb in sub.notebooks:
        src = graded["notebooks"].get(nb.name)
        if src is None:
            continue
        nb.late_submission_penalty = src["late"]
        for g in nb.grades:
            if g.name in src["grades"]:
                g.auto_score = src["grades"][g.name]
                g.needs_manual_grade = g.manual_score is not None or g.auto_score is None
        for c in nb.comments:
            if c.name in src["comments"]:
                c.auto_comment = src["comments"][c.name]


def _remove(gb: Gradebook, assignment: str, student: str) -> None:
    """Delete the student's submission of ``assignment`` (not committed)."""
    try:
        sub = gb.find_submission(assignment, student)
    except MissingEntry:
        return
    for nb in sub.notebooks:
        for row in list(nb.grades) + list(nb.comments):
            gb.db.delete(row)
        gb.db.delete(nb)
    gb.db.delete(sub)


def commit_outcome(db_url: str, rec: Record, graded: dict | None) -> None:
    """One transaction: the student's submission made from ``graded`` (:func:`read_private`),
    or removed when ``graded`` is None (nothing was graded: no half-graded entry stays), and
    the record."""
    with Gradebook(db_url, COURSE_ID) as gb:
        try:
            if graded is not None:
                _merge(gb, rec.assignment, rec.student, graded)
            else:
                _remove(gb, rec.assignment, rec.student)
            _put_record(gb.db, rec)
            gb.db.commit()
        except BaseException:
            gb.db.rollback()
            raise


def has_submission(db_url: str, assignment: str, student: str) -> bool:
    with Gradebook(db_url, COURSE_ID) as gb:
        try:
            gb.find_submission(assignment, student)
            return True
        except MissingEntry:
            return False


def release_key(db_url: str, assignment: str) -> str | None:
    """The hash of the source the gradebook's ``assignment`` was released from (None if it
    was not released by ``grade``, or its notebooks are gone)."""
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)
        row = gb.db.execute(select(RELEASES).where(RELEASES.c.assignment == assignment)).mappings().first()
        try:
            present = bool(gb.find_assignment(assignment).notebooks)
        except MissingEntry:
            present = False
    return row["source_sha256"] if row is not None and present else None


def put_release_key(db_url: str, assignment: str, key: str) -> None:
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)
        try:
            gb.db.execute(delete(RELEASES).where(RELEASES.c.assignment == assignment))
            gb.db.execute(insert(RELEASES).values(assignment=assignment, source_sha256=key))
            gb.db.commit()
        except BaseException:
            gb.db.rollback()
            raise


def limits(db_url: str, assignment: str, inputs_sha256: str) -> dict | None:
    """The limits measured for ``assignment`` on these inputs, if any."""
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)
        row = gb.db.execute(select(LIMITS).where(LIMITS.c.assignment == assignment)).mappings().first()
    return dict(row) if row is not None and row["inputs_sha256"] == inputs_sha256 else None


def put_limits(db_url: str, assignment: str, inputs_sha256: str, cell_timeout: int, student_timeout: int,
               slowest_cell_s: float, reference_s: float) -> None:
    with Gradebook(db_url, COURSE_ID) as gb:
        METADATA.create_all(gb.engine, checkfirst=True)
        try:
            gb.db.execute(delete(LIMITS).where(LIMITS.c.assignment == assignment))
            gb.db.execute(insert(LIMITS).values(
                assignment=assignment, inputs_sha256=inputs_sha256, cell_timeout=cell_timeout,
                student_timeout=student_timeout, slowest_cell_s=slowest_cell_s, reference_s=reference_s,
                measured_at=time.time()))
            gb.db.commit()
        except BaseException:
            gb.db.rollback()
            raise
