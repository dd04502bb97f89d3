"""Grade a folder or zip of submissions: one student per subfolder or per zip file.

    python -m autograder grade submissions/ --assignment 02_transformer_blocks

For each student: find the notebook(s), copy them into nbgrader's ``submitted/`` layout,
autograde and write feedback in a worker process of its own (with a wall-clock limit),
then read the scores back from the gradebook. Whatever one submission does (crash, exit,
loop, flood, invalid JSON, deleted or edited locked cells), it is reported on its own
row; the others are graded as usual and the gradebook keeps no half-graded entry.
Writes ``grades.csv`` and prints a table.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from autograder import config as cfg
from autograder.release import assignments as list_assignments
from autograder.release import generate_release

#: Largest total size a submission zip may unpack to.
MAX_UNZIPPED_BYTES = 200 * 2**20
_SKIP = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclass
class Result:
    """One row of the gradebook table / CSV."""

    student: str
    status: str = "graded"  # graded | missing | invalid | failed | timeout
    message: str = ""
    score: float = 0.0
    max_score: float = 0.0
    auto_score: float = 0.0
    auto_max: float = 0.0
    manual_pending: float = 0.0  # points that wait for a human grader
    cells: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    review: str = ""  # why a human should look (the notebook's own checks and the trusted ones disagree)


# -- collecting submissions ----------------------------------------------------------------

def _safe_id(name: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_.@+-]", "_", name).lstrip(".") or "student"
    return sid[:80]


def _safe_extract(zpath: Path, dest: Path) -> None:
    """Extract a zip refusing absolute paths, '..', links and zip bombs."""
    with zipfile.ZipFile(zpath) as z:
        total = 0
        for info in z.infolist():
            name = info.filename
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
                raise ValueError(f"unsafe path in {zpath.name}: {name!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"symbolic link in {zpath.name}: {name!r}")
            total += info.file_size
            if total > MAX_UNZIPPED_BYTES:
                raise ValueError(f"{zpath.name} unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MiB")
        z.extractall(dest)


def collect(path: Path, staging: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Map student id -> folder with their files; and student id -> problem for bad entries.

    ``path`` is a folder of student folders and/or ``<student>.zip`` files, or one zip
    holding such a folder.
    """
    path = Path(path)
    problems: dict[str, str] = {}
    if path.is_file() and path.suffix == ".zip":
        root = staging / "_unzipped"
        _safe_extract(path, root)
        entries = [p for p in root.iterdir() if p.name not in _SKIP]
        # a zip of one wrapper folder (no notebook directly inside) holding the student folders
        if len(entries) == 1 and entries[0].is_dir() and not any(entries[0].glob("*.ipynb")):
            root = entries[0]
        path = root
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: expected a folder of student folders or zip files, or a zip file")
    students: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.name in _SKIP:
            continue
        if entry.is_dir():
            sid = _safe_id(entry.name)
            students[sid] = entry
        elif entry.suffix == ".zip":
            sid = _safe_id(entry.stem)
            dest = staging / "zips" / sid
            try:
                _safe_extract(entry, dest)
                students[sid] = dest
            except (zipfile.BadZipFile, ValueError, OSError) as e:
                problems[sid] = f"unreadable zip: {e}"
    return students, problems


def find_notebook(folder: Path, name: str) -> Path | None:
    """``name`` anywhere under ``folder``; else the only notebook there; else None."""
    hits = [p for p in folder.rglob(name) if not (_SKIP & set(p.parts))]
    if hits:
        return min(hits, key=lambda p: len(p.parts))
    notebooks = [p for p in folder.rglob("*.ipynb") if not (_SKIP & set(p.parts))]
    return notebooks[0] if len(notebooks) == 1 else None


# -- grading ------------------------------------------------------------------------------

def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        import psutil

        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except Exception:
        proc.kill()


def _read_scores(db_url: str, aid: str, sid: str, r: Result) -> None:
    with Gradebook(db_url, "attention-course") as gb:
        sub = gb.find_submission(aid, sid)
        r.score, r.max_score = float(sub.score), float(sub.max_score)
        r.auto_max = float(sub.max_code_score)
        for nb in sub.notebooks:
            for g in nb.grades:
                if g.cell_type == "code" or g.auto_score is not None:
                    r.cells[g.name] = float(g.score)
                if g.needs_manual_grade:
                    r.manual_pending += float(g.max_score)
        r.auto_score = float(sub.code_score)


def _drop_submission(db_url: str, aid: str, sid: str) -> None:
    """Remove a half-written submission so the gradebook holds no partial entry."""
    with Gradebook(db_url, "attention-course") as gb:
        try:
            gb.remove_submission(aid, sid)
        except MissingEntry:
            pass


def grade_student(course_dir: Path, aid: str, sid: str, notebooks: dict[str, Path | None], *,
                  db_url: str, cell_timeout: int, student_timeout: int, log_dir: Path,
                  sandbox: bool = True, checks_dir: Path | None = None) -> Result:
    r = Result(sid)
    t0 = time.perf_counter()
    submitted = course_dir / "submitted" / sid / aid
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    missing = [n for n, p in notebooks.items() if p is None]
    for name, src in notebooks.items():
        if src is None:
            continue
        try:
            nbformat.read(src, as_version=4)
        except Exception as e:  # invalid JSON, not a notebook, unreadable
            _drop_submission(db_url, aid, sid)
            r.status, r.message = "invalid", f"{src.name} is not a valid notebook ({type(e).__name__}: {str(e)[:200]})"
            r.seconds = time.perf_counter() - t0
            return r
        shutil.copy2(src, submitted / name)
    if len(missing) == len(notebooks):
        _drop_submission(db_url, aid, sid)
        r.status, r.message = "missing", "no notebook found: expected " + ", ".join(notebooks)
        return r

    result_file = log_dir / f"{sid}.json"
    result_file.unlink(missing_ok=True)
    report = log_dir / f"{sid}.trusted.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env["COURSE_PROFILE"] = "quick"  # never retrain a full model while grading
    env["MPLBACKEND"] = "Agg"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(cfg.repo_root()) + os.pathsep + env.get("PYTHONPATH", "")
    env["AUTOGRADER_TRUSTED_REPORT"] = str(report)
    cmd = [sys.executable, "-m", "autograder.worker", str(course_dir), aid, sid,
           "--db-url", db_url, "--cell-timeout", str(cell_timeout), "--result", str(result_file)]
    if sandbox:
        cmd.append("--sandbox")
    if checks_dir is not None:
        cmd += ["--checks-dir", str(checks_dir)]
    with open(log_dir / f"{sid}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            proc.wait(timeout=student_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            proc.wait()
            _drop_submission(db_url, aid, sid)
            r.status, r.message = "timeout", f"grading took longer than {student_timeout} s"
            r.seconds = time.perf_counter() - t0
            return r
    outcome = json.loads(result_file.read_text()) if result_file.exists() else {}
    r.seconds = time.perf_counter() - t0
    if not outcome.get("autograde"):
        _drop_submission(db_url, aid, sid)
        r.status = "failed"
        r.message = (outcome.get("error") or f"grader process exited with {proc.returncode}").splitlines()[-1][:300]
        return r
    _read_scores(db_url, aid, sid, r)
    if report.exists():
        verdicts = json.loads(report.read_text())
        disagree = sorted(g for g, v in verdicts.items() if v.get("disagrees"))
        if disagree:
            r.review = "notebook and trusted checks disagree on " + ", ".join(disagree)
    if missing:
        r.message = "missing: " + ", ".join(missing)
    if not outcome.get("feedback"):
        r.message = (r.message + "; " if r.message else "") + "feedback not written: " + outcome.get("error", "")[:200]
    return r


def grade(path: Path, assignment: str | None = None, *, course_dir: Path | None = None,
          db_url: str | None = None, csv_path: Path | None = None,
          cell_timeout: int = cfg.CELL_TIMEOUT_S, student_timeout: int = 1800,
          unsafe: bool = False, checks_dir: Path | None = None, echo: bool = True) -> list[Result]:
    """Grade every submission under ``path``; return one :class:`Result` per student.

    Each student's kernel runs sandboxed (:mod:`autograder.sandbox`); where the sandbox
    cannot start, grading refuses unless ``unsafe`` (a trusted, single-user setting).
    """
    if not unsafe:
        from autograder.sandbox import check_available

        why = check_available()
        if why:
            raise SystemExit(f"refusing to grade: the sandbox cannot start here ({why}).\n"
                             "Install bubblewrap, or pass --unsafe to run submissions unsandboxed "
                             "(only for code you trust).")
    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    db_url = db_url or cfg.default_db_url(course_dir)
    known = list_assignments(course_dir)
    if assignment is None:
        if len(known) != 1:
            raise SystemExit(f"several assignments in {course_dir / cfg.SOURCE}: pass --assignment, one of {known}")
        assignment = known[0]
    if assignment not in known:
        raise SystemExit(f"unknown assignment {assignment!r}: expected one of {known}")
    nb_names = sorted(p.name for p in (course_dir / cfg.SOURCE / assignment).glob("*.ipynb"))

    # the gradebook must know the assignment as released (locked cells, grade cells)
    with tempfile.TemporaryDirectory() as tmp:
        generate_release(course_dir, assignment, Path(tmp) / assignment, db_url)

    log_dir = course_dir / "grading-logs" / assignment
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as staging:
        students, problems = collect(Path(path), Path(staging))
        for sid, why in problems.items():
            results.append(Result(sid, status="invalid", message=why))
        for i, (sid, folder) in enumerate(sorted(students.items()), 1):
            if echo:
                print(f"[{i}/{len(students)}] grading {sid} ...", flush=True)
            notebooks = {name: find_notebook(folder, name) for name in nb_names}
            try:
                r = grade_student(course_dir, assignment, sid, notebooks, db_url=db_url,
                                  cell_timeout=cell_timeout, student_timeout=student_timeout, log_dir=log_dir,
                                  sandbox=not unsafe, checks_dir=checks_dir)
            except Exception as e:  # never let one student stop the others
                _drop_submission(db_url, assignment, sid)
                r = Result(sid, status="failed", message=f"{type(e).__name__}: {e}"[:300])
            results.append(r)
    results.sort(key=lambda r: r.student)
    max_auto = max((r.auto_max for r in results if r.status == "graded"), default=0.0)
    max_total = max((r.max_score for r in results if r.status == "graded"), default=0.0)
    for r in results:
        if r.status != "graded":
            r.auto_max, r.max_score = max_auto, max_total
    write_csv(results, csv_path or course_dir / f"grades-{assignment}.csv", assignment)
    if echo:
        print(format_table(results, assignment))
        print(f"\nCSV: {csv_path or course_dir / f'grades-{assignment}.csv'}")
        print(f"feedback: {course_dir / 'feedback'}/<student>/{assignment}/")
        print(f"logs: {log_dir}")
    return results


def write_csv(results: list[Result], path: Path, assignment: str) -> None:
    cells = sorted({c for r in results for c in r.cells})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "assignment", "status", "score", "max_score", "auto_score", "auto_max",
                "manual_pending", *cells, "review", "message"])
    for r in results:
        w.writerow([r.student, assignment, r.status, f"{r.score:g}", f"{r.max_score:g}",
                    f"{r.auto_score:g}", f"{r.auto_max:g}", f"{r.manual_pending:g}",
                    *[f"{r.cells[c]:g}" if c in r.cells else "" for c in cells], r.review, r.message])
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)


def format_table(results: list[Result], assignment: str) -> str:
    head = f"{'student':<24} {'status':<8} {'auto':>12} {'manual':>8} {'time':>7}  message"
    lines = [f"gradebook for {assignment}", head, "-" * len(head)]
    for r in results:
        auto = f"{r.auto_score:g}/{r.auto_max:g}"
        manual = f"{r.manual_pending:g} pend" if r.manual_pending else "-"
        note = ("REVIEW: " + r.review + (" | " if r.message else "") if r.review else "") + r.message
        lines.append(f"{r.student[:24]:<24} {r.status:<8} {auto:>12} {manual:>8} {r.seconds:6.1f}s  {note[:90]}")
    return "\n".join(lines)
