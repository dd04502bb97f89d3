"""``python -m autograder export``: scores from the gradebook, and what only ``grade`` knows
(status, review, message, students the gradebook holds no submission of) kept from its CSV."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

import toy
from autograder.export import export
from autograder.grade import Result, write_csv
from autograder.release import generate_release

# nbgrader's own update_or_create_submission warns about its session handling
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

REVIEW = "restored from the release: cell 'add_test' changed"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> tuple[Path, str]:
    """The toy course released into a gradebook with two submissions: alice (add and mul
    right, the written answer graded by hand: 2 of 2) and bob (nothing right)."""
    root = toy.make_course(tmp_path_factory.mktemp("export"))
    db = f"sqlite:///{root / 'gradebook.db'}"
    generate_release(root, "toy", root / "assignments" / "toy", db)
    with Gradebook(db, "attention-course") as gb:
        for sid in ("alice", "bob"):
            gb.update_or_create_student(sid)
            gb.update_or_create_submission("toy", sid)
        for sid, scores in [("alice", {"add_test": 4, "mul_test": 3, "sq_test": 0}),
                            ("bob", {"add_test": 0, "mul_test": 0, "sq_test": 0})]:
            for cell, score in scores.items():  # what autograding would have recorded
                grade = gb.find_grade(cell, "toy", "toy", sid)
                grade.auto_score, grade.needs_manual_grade = score, False
        why = gb.find_grade("why", "toy", "toy", "alice")  # graded by hand in the formgrader
        why.manual_score, why.needs_manual_grade = 2, False
        gb.db.commit()
    return root, db


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_export_keeps_what_grade_wrote(course, tmp_path, capsys):
    root, db = course
    path = tmp_path / "grades-toy.csv"
    # as `grade` left it: before the manual grade of alice's written answer
    write_csv([
        Result("alice", score=7, max_score=12, auto_score=7, auto_max=10, manual_pending=2,
               cells={"add_test": 4, "mul_test": 3, "sq_test": 0}, review=REVIEW, message="feedback not written: x"),
        Result("bob", score=0, max_score=12, auto_score=0, auto_max=10, manual_pending=2,
               cells={"add_test": 0, "mul_test": 0, "sq_test": 0}),
        Result("carol", status="invalid", message="carol.zip is not a zip file", max_score=12, auto_max=10),
        Result("dave", status="timeout", message="grading took longer than 1800 s", max_score=12, auto_max=10),
        Result("erin", status="missing", message="no notebook found: expected toy.ipynb", max_score=12, auto_max=10),
        Result("fred", status="failed", message="grader process exited with 1", max_score=12, auto_max=10),
    ], path, "toy")

    assert export("toy", course_dir=root, db_url=db, csv_path=path) == 0

    rows = _rows(path)
    assert list(rows) == ["alice", "bob", "carol", "dave", "erin", "fred"]
    alice, bob = rows["alice"], rows["bob"]
    # scores from the gradebook, with the manual grade that came after `grade`
    assert (alice["status"], alice["score"], alice["auto_score"], alice["manual_pending"]) == ("graded", "9", "7", "0")
    assert (alice["add_test"], alice["mul_test"], alice["sq_test"]) == ("4", "3", "0")
    assert (alice["review"], alice["message"]) == (REVIEW, "feedback not written: x")
    assert (bob["status"], bob["score"], bob["manual_pending"], bob["review"], bob["message"]) == \
        ("graded", "0", "2", "", "")
    for sid, status, message in [("carol", "invalid", "carol.zip is not a zip file"),
                                 ("dave", "timeout", "grading took longer than 1800 s"),
                                 ("erin", "missing", "no notebook found: expected toy.ipynb"),
                                 ("fred", "failed", "grader process exited with 1")]:
        row = rows[sid]
        assert (row["status"], row["message"], row["score"]) == (status, message, "0"), row
        assert (row["max_score"], row["auto_max"]) == ("12", "10")  # as for the graded students
        assert row["add_test"] == "" and row["assignment"] == "toy"
    table = capsys.readouterr().out
    assert "REVIEW: " + REVIEW in table and "timeout" in table

    # exporting again changes nothing
    before = path.read_text()
    export("toy", course_dir=root, db_url=db, csv_path=path)
    assert path.read_text() == before


def test_export_without_a_previous_csv(course, tmp_path):
    root, db = course
    path = tmp_path / "grades-toy.csv"
    export("toy", course_dir=root, db_url=db, csv_path=path)
    rows = _rows(path)
    assert list(rows) == ["alice", "bob"]
    assert rows["alice"]["status"] == "graded" and rows["alice"]["review"] == rows["alice"]["message"] == ""


def test_export_drops_stale_rows(course, tmp_path, capsys):
    """A CSV row that contradicts the gradebook: the gradebook wins."""
    root, db = course
    path = tmp_path / "grades-toy.csv"
    write_csv([Result("bob", status="failed", message="grader process exited with 1"),
               Result("zoe", score=10, max_score=12, auto_score=10, auto_max=10)], path, "toy")
    with open(path, "a", newline="") as f:  # another assignment's row is not this one's
        csv.writer(f).writerow(["xavier", "other", "invalid", "0", "0", "0", "0", "0", "", "elsewhere"])
    export("toy", course_dir=root, db_url=db, csv_path=path)
    rows = _rows(path)
    assert list(rows) == ["alice", "bob"]  # zoe: graded, but no submission in the gradebook
    assert (rows["bob"]["status"], rows["bob"]["message"]) == ("graded", "")
    assert "zoe is graded in grades-toy.csv but has no submission in the gradebook" in capsys.readouterr().err
