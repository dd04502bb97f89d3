"""Grading a class at scale (autograder/scale.py, ledger.py, progress.py, report.py) on the toy
course (tests/toy.py): the same students graded one at a time, by two local workers and on a
real Dask ``LocalCluster`` with two workers give the same rows and the same gradebook; a re-run
grades only what changed; a run killed half way leaves no half-written row and resumes; the
progress bar stays quiet off a terminal; the class report is built from what was recorded and
escapes what students wrote."""
from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

import toy
from autograder import ledger, scale
from autograder.demo import fill
from autograder.grade import grade
from autograder.release import generate_release
from autograder.sandbox import check_available

pytestmark = pytest.mark.skipif(check_available() is not None, reason=f"no sandbox: {check_available()}")

LIMITS = dict(cell_timeout=10, student_timeout=120)
FULL = 10.0


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _students(root: Path, subs: Path) -> None:
    """Two students to grade (honest; a wrong add with tampered points: flagged REVIEW) and two
    that never reach a worker (invalid JSON, no notebook)."""
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    source = nbformat.read(root / "source/toy/toy.ipynb", as_version=4)
    notebooks = {"honest": fill(release, source), "wrong": fill(release, source)}
    _cell(notebooks["wrong"], "add").source = "def add(a, b):\n    return 0\n"
    _cell(notebooks["wrong"], "add_test").metadata["nbgrader"]["points"] = 100
    for sid, nb in notebooks.items():
        (subs / sid).mkdir(parents=True)
        nbformat.write(nb, subs / sid / "toy.ipynb")
    (subs / "badjson").mkdir()
    (subs / "badjson" / "toy.ipynb").write_text('{"cells": [ not json')
    (subs / "nothing").mkdir()
    (subs / "nothing" / "notes.txt").write_text("forgot")


def _course(base: Path, name: str, release: bool = False) -> tuple[Path, str]:
    """A toy course (``grade`` releases it into the gradebook; ``release``: now, too)."""
    root = toy.make_course(base / name)
    db = f"sqlite:///{root / 'gradebook.db'}"
    if release:
        generate_release(root, "toy", root / "assignments" / "toy", db)
    return root, db


def _rows(results):
    return {r.student: (r.status, r.auto_score, r.auto_max, r.manual_pending, tuple(sorted(r.cells.items())),
                        r.review, r.message) for r in results}


def _gradebook(db: str) -> dict:
    """Every grade and comment of every submission (what nbgrader's formgrader shows)."""
    out = {}
    with Gradebook(db, ledger.COURSE_ID) as gb:
        for sub in gb.find_assignment("toy").submissions:
            for nb in sub.notebooks:
                for g in nb.grades:
                    out[(sub.student.id, nb.name, "grade", g.name)] = (g.auto_score, g.manual_score, g.needs_manual_grade)
                for c in nb.comments:
                    out[(sub.student.id, nb.name, "comment", c.name)] = c.auto_comment
    return out


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    base = tmp_path_factory.mktemp("scale")
    root, db = _course(base, "sequential", release=True)
    subs = base / "subs"
    _students(root, subs)
    results = grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1,
                    **LIMITS)
    return base, root, db, subs, results


def test_sequential_rows(sequential):
    _, _, _, _, results = sequential
    r = {x.student: x for x in results}
    assert r["honest"].status == "graded" and r["honest"].auto_score == FULL and not r["honest"].review
    assert r["wrong"].cells["add_test"] == 0 and r["wrong"].auto_score == 6 and r["wrong"].auto_max == FULL
    assert "points" in r["wrong"].review and not r["honest"].review
    assert r["badjson"].status == "invalid" and r["nothing"].status == "missing"


def test_two_local_workers_and_a_dask_cluster_give_the_sequential_results(sequential):
    from distributed import LocalCluster

    base, _, seq_db, subs, seq = sequential
    local_root, local_db = _course(base, "local2")
    par = grade(subs, "toy", course_dir=local_root, db_url=local_db, checks_dir=toy.CHECKS_DIR, echo=False,
                workers=2, **LIMITS)
    dask_root, dask_db = _course(base, "dask")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dist = grade(subs, "toy", course_dir=dask_root, db_url=dask_db, checks_dir=toy.CHECKS_DIR, echo=False,
                     scheduler=cluster.scheduler_address, **LIMITS)
    assert _rows(par) == _rows(seq)
    assert _rows(dist) == _rows(seq)
    assert _gradebook(local_db) == _gradebook(seq_db) == _gradebook(dask_db) != {}
    for root in (local_root, dask_root):  # the files the parent wrote from what the workers sent back
        assert (root / "feedback/honest/toy/toy.html").is_file()
        assert "Content-Security-Policy" in (root / "feedback/honest/toy/toy.html").read_text()
        assert (root / "autograded/wrong/toy/toy.ipynb").is_file()
        assert (root / "grading-logs/toy/wrong.trusted.json").is_file()
    recs = ledger.records(dask_db, "toy")
    assert {sid: rec.status for sid, rec in recs.items()} == {sid: row[0] for sid, row in _rows(seq).items()}


def _count_tasks(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = scale.run_task

    def counting(bundle, task, on_start=None):
        calls.append(task.student)
        return real(bundle, task, on_start)

    monkeypatch.setattr(scale, "run_task", counting)
    return calls


def test_rerun_grades_only_what_changed(sequential, monkeypatch, tmp_path):
    base, original, _, subs, seq = sequential
    root = tmp_path / "course"
    shutil.copytree(original, root)
    db = f"sqlite:///{root / 'gradebook.db'}"
    calls = _count_tasks(monkeypatch)
    again = grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1, **LIMITS)
    assert calls == [] and _rows(again) == _rows(seq)
    # a new notebook from one student: only they are graded again
    changed = tmp_path / "subs"
    shutil.copytree(subs, changed)
    shutil.copy(subs / "honest" / "toy.ipynb", changed / "wrong" / "toy.ipynb")
    monkeypatch.setattr(scale, "run_task", _not_graded(calls))
    grade(changed, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1, **LIMITS)
    assert calls == ["wrong"]


def _not_graded(calls: list[str]):
    """A stand-in for run_task that only notes who it was asked to grade."""
    def fake(bundle, task, on_start=None):
        calls.append(task.student)
        return {"student": task.student, "autograde": False, "error": "not really graded", "seconds": 0.0}
    return fake


@pytest.mark.parametrize("how", ["force", "other limits"])
def test_force_or_other_inputs_grade_everyone_again(sequential, monkeypatch, tmp_path, how):
    base, root, _, subs, _ = sequential
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    calls: list[str] = []
    monkeypatch.setattr(scale, "run_task", _not_graded(calls))
    limits = dict(LIMITS, force=True) if how == "force" else dict(LIMITS, cell_timeout=11)
    grade(subs, "toy", course_dir=copy, db_url=f"sqlite:///{copy / 'gradebook.db'}", checks_dir=toy.CHECKS_DIR,
          echo=False, workers=1, **limits)
    assert sorted(calls) == ["honest", "wrong"]


def test_killed_run_resumes_without_half_written_rows(tmp_path, monkeypatch):
    root, db = _course(tmp_path, "killed", release=True)
    subs = tmp_path / "subs"
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    source = nbformat.read(root / "source/toy/toy.ipynb", as_version=4)
    for sid in ("s1", "s2"):
        (subs / sid).mkdir(parents=True)
        nbformat.write(fill(release, source), subs / sid / "toy.ipynb")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]))
    # the command line, with the toy's checks
    code = ("import sys, toy\nimport autograder.grade as g\n_grade = g.grade\n"
            "def grade(*a, **k):\n    k['checks_dir'] = toy.CHECKS_DIR\n    return _grade(*a, **k)\n"
            "g.grade = grade\nfrom autograder.cli import main\nsys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, "grade", str(subs), "-a", "toy", "--course-dir", str(root), "--db-url", db,
           "--workers", "1", "--cell-timeout", "10", "--student-timeout", "120"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    db_file = root / "gradebook.db"
    deadline = time.monotonic() + 120
    graded = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db_file) as con:
                graded = con.execute("SELECT count(*) FROM autograder_record WHERE status = 'graded'").fetchone()[0]
        except sqlite3.Error:
            graded = 0
        if graded >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert b"running" not in err and b"student/s" not in err, "a progress bar was drawn off a terminal"
    deadline = time.monotonic() + 10
    while [p for p in Path("/proc").iterdir() if p.name.isdigit() and _running_worker(p)]:
        assert time.monotonic() < deadline, "a grading worker survived the run that started it"
        time.sleep(0.2)
    recorded = {sid for sid, rec in ledger.records(db, "toy").items() if rec.status == "graded"}
    assert recorded == {"s1"}
    book = _gradebook(db)
    assert {k[0] for k in book} == recorded, "gradebook rows without a record, or records without rows"
    assert all(v[0] is not None for k, v in book.items() if k[2] == "grade" and k[3] != "why")

    calls = _count_tasks(monkeypatch)
    results = {r.student: r for r in grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR,
                                           echo=False, workers=2, **LIMITS)}
    assert calls == ["s2"], "resumed: only the student not graded yet"
    assert all(r.status == "graded" and r.auto_score == FULL for r in results.values()), results


def _running_worker(proc: Path) -> bool:
    try:
        cmd = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return b"autograder.worker" in cmd and b"grade-task-" in cmd and _parent_gone(proc)


def _parent_gone(proc: Path) -> bool:
    try:
        ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return ppid == 1 or not Path(f"/proc/{ppid}").exists()


def test_limits_are_measured_from_the_reference_once(sequential, monkeypatch, tmp_path):
    _, original, _, subs, _ = sequential
    root = tmp_path / "course"
    shutil.copytree(original, root)
    db = f"sqlite:///{root / 'gradebook.db'}"
    seen: list[tuple[str, int, int]] = []

    def fake(bundle, task, on_start=None):  # the reference "takes" 3 s in its slowest cell, 12 s in all
        seen.append((task.student, bundle.cell_timeout, bundle.student_timeout))
        if task.student != "reference-solution":
            return {"student": task.student, "autograde": False, "error": "not graded here", "seconds": 0.0}
        private = tmp_path / "reference.db"  # what a worker would send back: every point
        private.write_bytes(bundle.template_db)
        with Gradebook(f"sqlite:///{private}", ledger.COURSE_ID) as gb:
            for nb in ledger._submission(gb, "toy", task.student).notebooks:
                for g in nb.grades:
                    g.auto_score = g.max_score if g.cell_type == "code" else None
            gb.db.commit()
        return {"student": task.student, "autograde": True, "gradebook": private.read_bytes(), "seconds": 12.0,
                "timing": {"toy.ipynb": {"cells": {"2": 3.0, "3": 0.1}}}}

    monkeypatch.setattr(scale, "run_task", fake)
    grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1)
    assert seen[0] == ("reference-solution", 120, 1800), "the reference runs with the fixed limits"
    assert sorted(seen[1:]) == [("honest", 12, 120), ("wrong", 12, 120)], seen
    seen.clear()
    grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1)
    assert sorted(seen) == [("honest", 12, 120), ("wrong", 12, 120)], "measured once, then kept"


def test_a_reference_without_every_point_gives_the_fixed_limits(sequential, monkeypatch, tmp_path):
    _, original, _, subs, _ = sequential
    root = tmp_path / "course"
    shutil.copytree(original, root)
    db = f"sqlite:///{root / 'gradebook.db'}"
    seen = []
    monkeypatch.setattr(scale, "run_task", lambda b, t, on_start=None: seen.append((t.student, b.cell_timeout,
                                                                                    b.student_timeout))
                        or {"student": t.student, "autograde": False, "error": "broken", "seconds": 0.0})
    grade(subs, "toy", course_dir=root, db_url=db, checks_dir=toy.CHECKS_DIR, echo=False, workers=1)
    assert sorted(seen) == [("honest", 120, 1800), ("reference-solution", 120, 1800), ("wrong", 120, 1800)]
    with sqlite3.connect(root / "gradebook.db") as con:
        assert con.execute("SELECT count(*) FROM autograder_limits").fetchone()[0] == 0, "nothing to keep"


def test_limits_from_the_reference():
    assert scale.derive_limits(0.05, 5.0) == (10, 120)  # floors
    assert scale.derive_limits(4.0, 30.0) == (16, 122)
    assert scale.derive_limits(60.0, 900.0) == (120, 1800)  # never above the fixed defaults
    assert scale.slowest_cell({"a.ipynb": {"cells": {"0": 0.5, "3": 2.5}}, "b.ipynb": {"cells": {}}}) == 2.5


def test_a_worker_with_other_code_refuses():
    bundle = scale.Bundle("toy", b"", {}, None, {"course/testing.py": "0" * 64}, 10, 60)
    out = scale.run_task(bundle, scale.Task("x", {}))
    assert not out["autograde"] and "another version of course/testing.py" in out["error"]
    checks = (Path(toy.CHECKS_DIR) / "toy.py").read_bytes()
    assert set(scale.code_hashes(checks)) == {"autograder/trusted.py"}


def test_progress_bar_only_on_a_terminal():
    from autograder.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, drawn in ((io.StringIO(), False), (Tty(), True)):
        p = Progress(5, done=1, file=stream)
        p.set_running(2)
        p.finished(failed=True)
        p.close()
        text = stream.getvalue()
        assert ("2/5" in text and "failed 1" in text and "running" in text) == drawn, text
        assert bool(text) == drawn


def test_class_report(sequential, tmp_path):
    from autograder.report import write_report
    from autograder.sanitize import sanitize_html

    _, root, _, _, _ = sequential
    db_file = tmp_path / "gradebook.db"
    shutil.copy(root / "gradebook.db", db_file)
    db = f"sqlite:///{db_file}"
    evil = "<img src=x onerror=alert(1)>"
    ledger.commit_outcome(db, ledger.Record("toy", f"eve{evil}", "x", "y", "failed", review="",
                                            message=f"<script>alert('msg')</script>{evil}", seconds=3.0), None)
    page = write_report("toy", course_dir=root, db_url=db, out=tmp_path / "report")
    text = page.read_text()
    for png in ("scores.png", "grade_cells.png", "hidden_checks.png", "grading_time.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("data:image/png;base64,") == 4, "the page carries its figures"
    assert "<script" not in text and "onerror=" not in text.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in text and "Content-Security-Policy" in text
    body = text.split("<body>", 1)[1]
    assert sanitize_html(body)[1] == []
    for expected in ("add on negative numbers", "add_test", "restored from the release", "not a valid notebook",
                     "no notebook found", "1/2"):
        assert expected in text, expected
    assert "should be" in text  # the wrong add's failure message is among the most frequent
    from autograder.report import failure_messages, gather, not_attempted

    rows = gather("toy", db)
    rows[0].verdicts = {"mul_test": {"checks": [{"name": "m", "passed": False,
                                                 "message": "your code raised NotImplementedError (in mul)"}]}}
    assert not_attempted(rows) == {"mul_test": 1}
    assert all("NotImplementedError" not in m for *_, m in failure_messages(rows)), "left as released: no mistake"


def test_a_new_gradebook_without_the_environment_on_path(tmp_path):
    """`.venv/bin/python -m autograder grade` in a shell where the environment is not activated: nbgrader shells
    out to `alembic` to create the gradebook, which must be this environment's."""
    import subprocess
    import sys

    db = tmp_path / "new.db"
    code = f"from autograder import ledger; ledger.ensure_tables('sqlite:///{db}')"
    r = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert db.is_file()
