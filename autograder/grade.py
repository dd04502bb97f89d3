"""Grade a folder or zip of submissions: one student per subfolder or per zip file.

    python -m autograder grade submissions/ --assignment 02_transformer_blocks

For each student: take only the expected notebook(s) out of their folder or zip (never
following links, bounded in size and entries: :mod:`autograder.collect`), restore the
locked cells from the release (:mod:`autograder.restore`), copy them into nbgrader's
``submitted/`` layout, autograde and write feedback in a worker process of its own (with
a wall-clock limit; its kernel sandboxed), then read the scores back from the gradebook.
Whatever one submission does (crash, exit, loop, flood, invalid JSON, deleted or edited
locked cells, links, huge files), it is reported on its own row; the others are graded as
usual and the gradebook keeps no half-graded entry. Writes ``grades.csv`` and prints a table.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from autograder import config as cfg
from autograder.collect import Submission, collect
from autograder.release import assignments as list_assignments
from autograder.release import generate_release
from autograder.restore import restore_locked
from autograder.sanitize import harden_feedback_dir


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
    review: str = ""  # why a human should look: tampering restored, or notebook and trusted checks disagree


# -- grading ------------------------------------------------------------------------------

def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the worker and everything it started (it leads its own process group; its
    sandboxed kernels die with their parent, and their cgroups are emptied by the sandbox)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _only_regular_files(folder: Path) -> list[str]:
    """Remove anything under ``folder`` that is not a regular file or a folder (links,
    sockets, fifos); return what was removed. Nothing there should ever be one: this is the
    last line of defence before files are handed to students or opened by instructors."""
    removed = []
    if not folder.is_dir() or folder.is_symlink():
        return removed
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(path)
                removed.append(os.path.relpath(path, folder))
    return removed


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


#: Notes of :func:`autograder.restore.restore_locked` that are no tampering (a student's own
#: Jupyter names its kernel differently): restored silently, not flagged for review.
_INNOCENT_NOTES = ("kernelspec changed", "(order kept)")
#: Tampering notes kept per student (the rest are counted).
_MAX_NOTES = 6


#: Sanitiser notes (:mod:`autograder.sanitize`) that mean active content, not just an SVG plot
#: or a remote image: they flag the student for review.
_ACTIVE = ("script", "javascript", "attribute", "frame", "object", "embed", "meta", "base", "form")


def _sanitized_notes(folder: Path, names) -> list[str]:
    """What the sanitiser removed from the graded notebooks in ``folder`` (grader-written files)."""
    notes: list[str] = []
    for name in names:
        try:
            meta = json.loads((folder / name).read_text()).get("metadata", {})
        except (OSError, ValueError, AttributeError):
            continue
        notes += [n for n in meta.get("autograder_sanitized", []) if isinstance(n, str)]
    return notes


def _prepare(src: Path, release_nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """The student's notebook read from the grader's own copy, with the locked cells of the
    release restored; and what had been tampered with."""
    text = src.read_bytes().decode("utf-8")
    nb = nbformat.reads(text, as_version=4)
    nb, notes = restore_locked(nb, release_nb)
    return nb, [n for n in notes if not any(k in n for k in _INNOCENT_NOTES)]


def grade_student(course_dir: Path, aid: str, sub: Submission, releases: dict[str, nbformat.NotebookNode], *,
                  db_url: str, cell_timeout: int, student_timeout: int, log_dir: Path,
                  sandbox: bool = True, checks_dir: Path | None = None) -> Result:
    """Grade one collected submission (see :func:`grade`)."""
    sid = sub.student
    r = Result(sid)
    t0 = time.perf_counter()
    submitted = course_dir / "submitted" / sid / aid
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    missing = [n for n, p in sub.notebooks.items() if p is None]
    tampered: list[str] = []
    for name, src in sub.notebooks.items():
        if src is None:
            continue
        try:
            nb, notes = _prepare(src, releases[name])
        except Exception as e:  # invalid JSON, not a notebook, not UTF-8
            _drop_submission(db_url, aid, sid)
            r.status, r.message = "invalid", f"{name} is not a valid notebook ({type(e).__name__}: {str(e)[:160]})"
            r.seconds = time.perf_counter() - t0
            return r
        tampered += [f"{name}: {n}" if len(sub.notebooks) > 1 else n for n in notes]
        nbformat.write(nb, submitted / name)
    if len(missing) == len(sub.notebooks):
        _drop_submission(db_url, aid, sid)
        r.status, r.message = "missing", "no notebook found: expected " + ", ".join(sub.notebooks)
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
    cmd = [sys.executable, "-m", "autograder.worker",
           "--db-url", db_url, "--cell-timeout", str(cell_timeout), "--result", str(result_file)]
    if sandbox:
        cmd.append("--sandbox")
    if checks_dir is not None:
        cmd += ["--checks-dir", str(checks_dir)]
    cmd += ["--", str(course_dir), aid, sid]  # positional, whatever they look like
    with open(log_dir / f"{sid}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            proc.wait(timeout=student_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            proc.wait()
            if sandbox:  # the worker could not clean up its kernel's cgroup: do it now
                from autograder.sandbox import remove_stale_cgroups

                remove_stale_cgroups()
            _drop_submission(db_url, aid, sid)
            for folder in ("autograded", "feedback"):
                shutil.rmtree(course_dir / folder / sid / aid, ignore_errors=True)
            r.status, r.message = "timeout", f"grading took longer than {student_timeout} s"
            r.seconds = time.perf_counter() - t0
            return r
    outcome = json.loads(result_file.read_text()) if result_file.exists() else {}
    if outcome.get("feedback"):
        try:  # a Content-Security-Policy on every page: only the template's own scripts may run
            harden_feedback_dir(course_dir / "feedback" / sid / aid)
        except Exception as e:
            shutil.rmtree(course_dir / "feedback" / sid / aid, ignore_errors=True)
            outcome["feedback"], outcome["error"] = False, f"feedback could not be hardened: {e}"[:200]
    r.seconds = time.perf_counter() - t0
    removed = [f"{folder}: {p}" for folder in ("autograded", "feedback")
               for p in _only_regular_files(course_dir / folder / sid / aid)]
    if removed:  # cannot happen unless the kernel reached the course folder: never hand it out
        _drop_submission(db_url, aid, sid)
        shutil.rmtree(course_dir / "feedback" / sid / aid, ignore_errors=True)
        r.status, r.message = "failed", "links or special files in the graded copy: " + ", ".join(removed)[:250]
        return r
    if not outcome.get("autograde"):
        _drop_submission(db_url, aid, sid)
        r.status = "failed"
        r.message = (outcome.get("error") or f"grader process exited with {proc.returncode}").splitlines()[-1][:300]
        return r
    _read_scores(db_url, aid, sid, r)
    reasons = []
    if tampered:
        more = f"; and {len(tampered) - _MAX_NOTES} more" if len(tampered) > _MAX_NOTES else ""
        reasons.append("restored from the release: " + "; ".join(tampered[:_MAX_NOTES]) + more)
    if report.exists():
        verdicts = json.loads(report.read_text())
        disagree = sorted(g for g, v in verdicts.items() if v.get("disagrees"))
        if disagree:
            reasons.append("notebook and trusted checks disagree on " + ", ".join(disagree))
    active = [n for n in _sanitized_notes(course_dir / "autograded" / sid / aid, sub.notebooks)
              if any(k in n for k in _ACTIVE)]
    if active:  # an attempt at the instructor's browser, or an odd notebook: worth a look
        reasons.append("active content removed: " + "; ".join(active[:3]) + ("; ..." if len(active) > 3 else ""))
    r.review = " | ".join(reasons)
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

    log_dir = course_dir / "grading-logs" / assignment
    log_dir.mkdir(parents=True, exist_ok=True)
    if echo and not unsafe:
        from autograder.sandbox import describe_limits

        print(f"sandbox limits per kernel: {describe_limits()}", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="grading-") as staging:
        staging = Path(staging)
        # the gradebook must know the assignment as released (locked cells, grade cells); the
        # release is also what tampered locked cells are restored from
        generate_release(course_dir, assignment, staging / "release" / assignment, db_url)
        releases = {n: nbformat.read(staging / "release" / assignment / n, as_version=4) for n in nb_names}
        subs = collect(Path(path), staging / "collected", nb_names)
        for i, sub in enumerate(subs, 1):
            if sub.problem:
                results.append(Result(sub.student, status="invalid", message=sub.problem))
                continue
            if echo:
                print(f"[{i}/{len(subs)}] grading {sub.student} ...", flush=True)
            try:
                r = grade_student(course_dir, assignment, sub, releases, db_url=db_url,
                                  cell_timeout=cell_timeout, student_timeout=student_timeout, log_dir=log_dir,
                                  sandbox=not unsafe, checks_dir=checks_dir)
            except Exception as e:  # never let one student stop the others
                _drop_submission(db_url, assignment, sub.student)
                r = Result(sub.student, status="failed", message=f"{type(e).__name__}: {e}"[:300])
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


def _cell_text(text: str) -> str:
    """Text a spreadsheet shows as text, never evaluates as a formula (OWASP's CSV injection rule)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(results: list[Result], path: Path, assignment: str) -> None:
    cells = sorted({c for r in results for c in r.cells})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "assignment", "status", "score", "max_score", "auto_score", "auto_max",
                "manual_pending", *cells, "review", "message"])
    for r in results:
        w.writerow([_cell_text(r.student), assignment, r.status, f"{r.score:g}", f"{r.max_score:g}",
                    f"{r.auto_score:g}", f"{r.auto_max:g}", f"{r.manual_pending:g}",
                    *[f"{r.cells[c]:g}" if c in r.cells else "" for c in cells],
                    _cell_text(r.review), _cell_text(r.message)])
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
