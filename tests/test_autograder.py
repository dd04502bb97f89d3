"""The autograder on a tiny course: every bad submission is reported on its own row,
scored on what still works, and never changes anyone else's grade."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

import toy
from autograder.demo import fill
from autograder.grade import collect, grade
from autograder.release import generate_release, strip_for_solutions

FULL = 10.0  # autograded points of the toy notebook


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = toy.make_course(tmp_path_factory.mktemp("course"))
    db = f"sqlite:///{root / 'gradebook.db'}"
    generate_release(root, "toy", root / "assignments" / "toy", db)
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    source = nbformat.read(root / "source/toy/toy.ipynb", as_version=4)
    subs = root / "subs"

    def put(sid, nb=None, text=None):
        (subs / sid).mkdir(parents=True)
        if text is not None:
            (subs / sid / "toy.ipynb").write_text(text)
        else:
            nbformat.write(nb, subs / sid / "toy.ipynb")

    def honest():
        return fill(release, source)

    put("a_honest", honest())
    put("z_honest", honest())
    put("blank", release)
    nb = honest(); _cell(nb, "add").source = "def add(a, b):\n    raise ValueError('oops')"; put("crash", nb)
    nb = honest(); _cell(nb, "add").source = "import os\nos._exit(3)"; put("exit", nb)
    nb = honest(); _cell(nb, "add").source = "while True:\n    pass\ndef add(a, b):\n    return a + b"; put("loop", nb)
    nb = honest(); _cell(nb, "add").source = ("def add(a, b):\n    return a + b\n"
                                              "for i in range(200000):\n    print('flood' * 20)"); put("flood", nb)
    put("badjson", text='{"cells": [ this is not json')
    nb = honest(); nb.cells = [c for c in nb.cells
                               if c.metadata.get("nbgrader", {}).get("grade_id") != "add_test"]; put("deleted", nb)
    nb = honest(); _cell(nb, "add").source = "def add(a, b):\n    return 0"
    _cell(nb, "add_test").source = "pass"; put("edited", nb)
    nb = honest(); nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    put("kernel", nb)
    nb = honest(); _cell(nb, "add_test").metadata["nbgrader"]["points"] = 100; put("points", nb)
    (subs / "nothing").mkdir(); (subs / "nothing" / "notes.txt").write_text("forgot")
    # a student submitting a zip with their notebook in a nested folder
    zdir = root / "zsrc"; (zdir / "hw").mkdir(parents=True); nbformat.write(honest(), zdir / "hw" / "toy.ipynb")
    with zipfile.ZipFile(subs / "zipped.zip", "w") as z:
        z.write(zdir / "hw" / "toy.ipynb", "hw/toy.ipynb")
    (subs / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")

    results = grade(subs, "toy", course_dir=root, db_url=db, cell_timeout=4, student_timeout=60, echo=False)
    return root, {r.student: r for r in results}


def test_honest_students_get_full_marks(graded):
    _, r = graded
    for sid in ("a_honest", "z_honest", "zipped"):
        assert r[sid].status == "graded", r[sid]
        assert r[sid].auto_score == FULL and r[sid].auto_max == FULL, r[sid]
        assert r[sid].manual_pending == 2  # the written answer waits for a human


def test_blank_release_scores_zero(graded):
    assert graded[1]["blank"].status == "graded" and graded[1]["blank"].auto_score == 0


@pytest.mark.parametrize("sid, lost", [("crash", "add_test"), ("exit", "add_test"), ("loop", "add_test")])
def test_failure_costs_only_its_own_cells(graded, sid, lost):
    r = graded[1][sid]
    assert r.status == "graded", r
    assert r.cells[lost] == 0
    assert r.cells["mul_test"] == 3 and r.cells["sq_test"] == 3, r.cells


def test_output_flood_is_capped_and_graded(graded):
    root, r = graded
    assert r["flood"].status == "graded" and r["flood"].auto_score == FULL
    size = (root / "autograded/flood/toy/toy.ipynb").stat().st_size
    assert size < 2_000_000, f"autograded notebook is {size} bytes: output was not capped"


def test_invalid_and_missing_submissions_are_reported(graded):
    r = graded[1]
    assert r["badjson"].status == "invalid" and "not a valid notebook" in r["badjson"].message
    assert r["nothing"].status == "missing" and r["nothing"].auto_score == 0
    assert r["broken"].status == "invalid" and "zip" in r["broken"].message


def test_locked_cells_are_restored(graded):
    r = graded[1]
    assert r["deleted"].auto_score == FULL, "a deleted grade cell must be put back and run"
    assert r["edited"].cells["add_test"] == 0, "an edited grade cell must be restored from the gradebook"
    assert r["points"].auto_max == FULL and r["points"].auto_score == FULL


def test_kernel_name_is_pinned(graded):
    assert graded[1]["kernel"].auto_score == FULL


def test_warning_on_stderr_does_not_zero_a_correct_answer(graded):
    assert graded[1]["a_honest"].cells["sq_test"] == 3


def test_feedback_has_no_hidden_tests(graded):
    root, _ = graded
    pages = list((root / "feedback").rglob("*.html"))
    assert {p.parts[-3] for p in pages} >= {"a_honest", "crash", "exit", "blank"}
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert toy.CANARY not in text, f"hidden test code leaked into {page}"
        assert "add(-5, 5) should be 0" not in text or page.parts[-3] in ("crash", "blank", "exit", "loop", "edited")


def test_csv_gradebook(graded):
    root, r = graded
    rows = {row["student"]: row for row in csv.DictReader(open(root / "grades-toy.csv"))}
    assert set(rows) == set(r)
    assert float(rows["a_honest"]["auto_score"]) == FULL
    assert rows["badjson"]["status"] == "invalid" and float(rows["badjson"]["auto_max"]) == FULL


def test_failed_submissions_leave_no_gradebook_entry(graded):
    from nbgrader.api import Gradebook

    root, _ = graded
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "attention-course") as gb:
        ids = {s.student.id for s in gb.find_assignment("toy").submissions}
    assert "badjson" not in ids and "nothing" not in ids and "a_honest" in ids


def test_zip_slip_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../escape.ipynb", "{}")
    students, problems = collect(tmp_path, tmp_path / "staging")
    assert "evil" in problems and "unsafe path" in problems["evil"]
    assert not (tmp_path.parent / "escape.ipynb").exists()


def test_solutions_keep_code_and_drop_hidden_tests():
    nb = strip_for_solutions(toy.toy_notebook())
    text = json.dumps(nb)
    assert "return a + b" in text
    assert toy.CANARY not in text and "BEGIN" not in text and "END HIDDEN" not in text
