"""Grade a folder or zip of submissions: one student per subfolder or per zip file.

    python -m autograder grade submissions/ --assignment 02_transformer_blocks [--workers N]
                                            [--scheduler tcp://host:8786] [--force]

For each student: take only the expected notebook(s) out of their folder or zip (never
following links, bounded in size and entries: :mod:`autograder.collect`), restore the
locked cells from the release (:mod:`autograder.restore`), and hand the notebook to a
task (:mod:`autograder.scale`) that autogrades it and writes feedback in a worker process
of its own (with a wall-clock limit; its kernel sandboxed), on this machine (``--workers``
at a time, default: one per core) or on a Dask cluster (``--scheduler``). Each task grades
into a private gradebook and hands everything back; this process alone writes the
course's gradebook, one transaction per student (:mod:`autograder.ledger`), so results
do not depend on how many workers ran. A student already graded from the same notebook
and the same grading inputs (release, hidden checks, limits) is not graded again unless
``force``; a run that is killed resumes where it stopped.

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
import stat
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import nbformat
from nbgrader.api import Gradebook

from autograder import config as cfg
from autograder import ledger
from autograder.collect import Submission, collect
from autograder.release import assignments as list_assignments
from autograder.release import generate_release, release_history
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


def _prepare(src: Path, release_nb: nbformat.NotebookNode, earlier: dict | None = None
             ) -> tuple[nbformat.NotebookNode, list[str]]:
    """The student's notebook read from the grader's own copy, with the locked cells of the
    release restored; and what had been tampered with (a cell as an earlier release of
    ``assignments/`` had it is not: ``earlier``, :func:`autograder.release.release_history`)."""
    text = src.read_bytes().decode("utf-8")
    nb = nbformat.reads(text, as_version=4)
    nb, notes = restore_locked(nb, release_nb, earlier)
    return nb, [n for n in notes if not any(k in n for k in _INNOCENT_NOTES)]


@dataclass
class _Job:
    """A student handed to a task: what only this process knows about them."""

    sub: Submission
    digest: str  # sha256 of the notebook(s) as submitted
    tampered: list[str]
    missing: list[str]


def _assignment_files(course_dir: Path, aid: str) -> dict[str, bytes]:
    """The non-notebook files of ``source/<aid>`` (data nbgrader copies next to the notebook),
    as nbgrader would take them (its ignore patterns, no links)."""
    import fnmatch

    root = course_dir / cfg.SOURCE / aid
    ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store", "*.tmp", "*.ipynb"]
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not any(fnmatch.fnmatch(d, p) for p in ignore)
                       and not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if any(fnmatch.fnmatch(name, p) for p in ignore) or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "rb") as f:
                out[Path(os.path.relpath(path, root)).as_posix()] = f.read()
    return out


_released: dict[str, tuple[bytes, dict[str, bytes]]] = {}


def _release(course_dir: Path, aid: str, staging: Path, db_url: str) -> tuple[bytes, dict[str, bytes]]:
    """The release of ``aid``: a SQLite gradebook that holds the released assignment and no
    student (each task grades into a copy of it) and the released notebooks (what locked cells
    are restored from), made once per process for each version of ``source/<aid>``. The
    course's gradebook gets the assignment too (nbgrader's generate_assignment), unless it
    holds it already from the same source."""
    from autograder import classroom
    from autograder.scale import sha256

    src = course_dir / cfg.SOURCE / aid
    parts: list[bytes | str] = [aid, str(classroom.PACKAGE_URL)]
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        parts += [f.relative_to(src).as_posix(), f.read_bytes()]
    key = sha256(*parts)
    if key not in _released:
        path = staging / "template" / "gradebook.db"
        path.parent.mkdir()
        out = staging / "template" / "release"
        generate_release(course_dir, aid, out, f"sqlite:///{path}")
        _released[key] = (path.read_bytes(), {f.name: f.read_bytes() for f in sorted(out.glob("*.ipynb"))})
    if ledger.release_key(db_url, aid) != key:
        generate_release(course_dir, aid, staging / "release" / aid, db_url)
        ledger.put_release_key(db_url, aid, key)
    return _released[key]


def _checks_file(aid: str, checks_dir: Path | None) -> bytes | None:
    from autograder.trusted import CHECKS_DIR

    path = Path(checks_dir or CHECKS_DIR) / f"{aid}.py"
    return path.read_bytes() if path.is_file() else None


def _clear_graded(course_dir: Path, aid: str, sid: str) -> None:
    for folder in ("autograded", "feedback"):
        shutil.rmtree(course_dir / folder / sid / aid, ignore_errors=True)


def _write_files(course_dir: Path, aid: str, sid: str, files: dict[str, bytes]) -> None:
    """Write what a task sent back under ``autograded/`` and ``feedback/`` of the student
    (relative paths only; nothing outside those two folders)."""
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if (len(parts) < 2 or parts[0] not in ("autograded", "feedback")
                or any(p in ("", ".", "..") or "\\" in p for p in parts) or PurePosixPath(rel).is_absolute()):
            raise ValueError(f"a task sent back an unexpected path: {rel[:100]!r}")
        dest = course_dir / parts[0] / sid / aid / Path(*parts[1:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        dest.write_bytes(data)


def disagreements(verdicts: dict) -> list[str]:
    """The grade cells (ids, sorted) whose own visible asserts and their trusted mirror disagree in a way that
    needs a person: ``verdicts`` is the checks' report, grade id -> verdict dict, in notebook order.

    While grading, the kernel runs the notebook without the course's references (they are withheld from it), so a
    grade cell that grades one part with the references of the earlier ones runs the student's own earlier parts
    there: after a mistake in part 1, part 3's visible asserts may fail in the kernel while its trusted mirror, run
    with the references, passes. That is the mistake of part 1, already scored, not tampering. Flagged: a cell
    whose asserts passed in the kernel while the mirror failed (the direction tampering takes), and one whose
    asserts failed in the kernel while the mirror passed although every earlier grade cell passed its checks."""
    flagged = []
    earlier_ok = True
    for gid, v in verdicts.items():
        if not isinstance(v, dict):
            continue
        if v.get("disagrees") and (v.get("in_kernel_ok") or earlier_ok):
            flagged.append(gid)
        earlier_ok = earlier_ok and bool(v.get("passed"))
    return sorted(flagged)


def _record(aid: str, r: Result, digest: str, inputs: str, host: str = "", verdicts: dict | None = None):
    return ledger.Record(aid, r.student, digest, inputs, r.status, r.review, r.message, r.seconds, host,
                         time.time(), verdicts)


def _finish(course_dir: Path, db_url: str, aid: str, job: _Job, outcome: dict, log_dir: Path,
            inputs: str) -> Result:
    """Turn what a task sent back into the student's row: files, review flag, and one
    gradebook transaction (the submission and the record, or the removal and the record)."""
    sid, sub = job.sub.student, job.sub
    r = Result(sid, seconds=float(outcome.get("seconds") or 0.0))
    host = str(outcome.get("host") or "")
    verdicts = outcome.get("verdicts") or {}
    (log_dir / f"{sid}.log").write_text(str(outcome.get("log") or ""))
    report = log_dir / f"{sid}.trusted.json"
    if verdicts:
        report.write_text(json.dumps(verdicts, indent=1))
    else:
        report.unlink(missing_ok=True)

    def fail(status: str, message: str) -> Result:
        r.status, r.message = status, message
        ledger.commit_outcome(db_url, _record(aid, r, job.digest, inputs, host, verdicts), None)
        return r

    _clear_graded(course_dir, aid, sid)
    if outcome.get("timed_out"):
        return fail("timeout", str(outcome.get("error") or "grading took too long"))
    _write_files(course_dir, aid, sid, outcome.get("files") or {})
    feedback_ok = bool(outcome.get("feedback"))
    error = str(outcome.get("error") or "")
    if feedback_ok:
        try:  # a Content-Security-Policy on every page: only the template's own scripts may run
            harden_feedback_dir(course_dir / "feedback" / sid / aid)
        except Exception as e:
            shutil.rmtree(course_dir / "feedback" / sid / aid, ignore_errors=True)
            feedback_ok, error = False, f"feedback could not be hardened: {e}"[:200]
    removed = list(outcome.get("odd") or []) + [f"{folder}: {p}" for folder in ("autograded", "feedback")
                                                 for p in _only_regular_files(course_dir / folder / sid / aid)]
    if removed:  # cannot happen unless the kernel reached the course folder: never hand it out
        shutil.rmtree(course_dir / "feedback" / sid / aid, ignore_errors=True)
        return fail("failed", "links or special files in the graded copy: " + ", ".join(removed)[:250])
    if not outcome.get("autograde") or not outcome.get("gradebook"):
        return fail("failed", (error or "grader process failed").splitlines()[-1][:300])
    with tempfile.TemporaryDirectory(prefix="private-gradebook-") as tmp:
        private = Path(tmp) / "gradebook.db"
        private.write_bytes(outcome["gradebook"])
        graded = ledger.read_private(private, aid, sid)
    reasons = []
    if job.tampered:
        more = f"; and {len(job.tampered) - _MAX_NOTES} more" if len(job.tampered) > _MAX_NOTES else ""
        reasons.append("restored from the release: " + "; ".join(job.tampered[:_MAX_NOTES]) + more)
    disagree = disagreements(verdicts)
    if disagree:
        reasons.append("notebook and trusted checks disagree on " + ", ".join(disagree))
    active = [n for n in _sanitized_notes(course_dir / "autograded" / sid / aid, sub.notebooks)
              if any(k in n for k in _ACTIVE)]
    if active:  # an attempt at the instructor's browser, or an odd notebook: worth a look
        reasons.append("active content removed: " + "; ".join(active[:3]) + ("; ..." if len(active) > 3 else ""))
    r.review = " | ".join(reasons)
    if job.missing:
        r.message = "missing: " + ", ".join(job.missing)
    if not feedback_ok:
        r.message = (r.message + "; " if r.message else "") + "feedback not written: " + error[:200]
    ledger.commit_outcome(db_url, _record(aid, r, job.digest, inputs, host, verdicts), graded)
    _read_scores(db_url, aid, sid, r)
    return r


def _plan(course_dir: Path, aid: str, sub: Submission, digest: str, releases: dict[str, nbformat.NotebookNode],
          history: dict, db_url: str, inputs: str) -> "tuple[_Job, dict[str, bytes]] | Result":
    """Restore the student's notebooks and write them to ``submitted/``: the job and the
    notebooks to grade, or the row of a submission that cannot be graded (recorded already)."""
    sid = sub.student
    t0 = time.perf_counter()
    submitted = course_dir / "submitted" / sid / aid
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    missing = [n for n, p in sub.notebooks.items() if p is None]
    tampered: list[str] = []
    notebooks: dict[str, bytes] = {}
    r = Result(sid)
    for name, src in sub.notebooks.items():
        if src is None:
            continue
        try:
            nb, notes = _prepare(src, releases[name], history.get(name))
        except Exception as e:  # invalid JSON, not a notebook, not UTF-8
            r.status, r.message = "invalid", f"{name} is not a valid notebook ({type(e).__name__}: {str(e)[:160]})"
            break
        tampered += [f"{name}: {n}" if len(sub.notebooks) > 1 else n for n in notes]
        nbformat.write(nb, submitted / name)
        notebooks[name] = (submitted / name).read_bytes()
    else:
        if len(missing) == len(sub.notebooks):
            r.status, r.message = "missing", "no notebook found: expected " + ", ".join(sub.notebooks)
    if r.status != "graded":
        r.seconds = time.perf_counter() - t0 if r.status == "invalid" else 0.0
        _clear_graded(course_dir, aid, sid)
        ledger.commit_outcome(db_url, _record(aid, r, digest, inputs), None)
        return r
    return _Job(sub, digest, tampered, missing), notebooks


def ledger_digest(raw: dict[str, bytes | None]) -> str:
    from autograder.scale import submission_sha256

    return submission_sha256(raw)


def _from_record(rec: ledger.Record, db_url: str, aid: str) -> Result:
    r = Result(rec.student, status=rec.status, message=rec.message, review=rec.review, seconds=rec.seconds)
    if rec.status == "graded":
        _read_scores(db_url, aid, rec.student, r)
    return r


def _limits(pool, bundle, release_bytes: dict[str, bytes], course_dir: Path, aid: str, nb_names: list[str],
            releases: dict, db_url: str, echo) -> tuple[int, int]:
    """Cell and student time limits measured from the reference solution (cached in the
    gradebook per grading inputs); the fixed defaults where the reference does not get every
    point."""
    from autograder.demo import fill
    from autograder.scale import DEFAULT_STUDENT_TIMEOUT_S, Task, derive_limits, inputs_sha256, slowest_cell

    key = inputs_sha256(bundle, release_bytes)
    known = ledger.limits(db_url, aid, key)
    if known is not None:
        echo(f"time limits (measured from the reference solution earlier): {known['cell_timeout']} s per cell, "
             f"{known['student_timeout']} s per student")
        return known["cell_timeout"], known["student_timeout"]
    echo("measuring the reference solution to set the time limits ...")
    notebooks = {}
    for n in nb_names:
        source = nbformat.read(course_dir / cfg.SOURCE / aid / n, as_version=4)
        notebooks[n] = nbformat.writes(fill(releases[n], source)).encode()
    ref = replace(bundle, cell_timeout=cfg.CELL_TIMEOUT_S, student_timeout=DEFAULT_STUDENT_TIMEOUT_S)
    outcome = pool.submit(pool.prepare(ref), Task("reference-solution", notebooks)).result()
    full = False
    if outcome.get("autograde") and outcome.get("gradebook"):
        with tempfile.TemporaryDirectory(prefix="private-gradebook-") as tmp:
            (Path(tmp) / "g.db").write_bytes(outcome["gradebook"])
            with Gradebook(f"sqlite:///{Path(tmp) / 'g.db'}", ledger.COURSE_ID) as gb:
                s = gb.find_submission(aid, "reference-solution")
                full = float(s.code_score) == float(s.max_code_score) > 0
    if not full:
        echo(f"warning: the reference solution did not get every point ({outcome.get('error', '')[:200]}); "
             f"using the fixed limits {cfg.CELL_TIMEOUT_S} s per cell, {DEFAULT_STUDENT_TIMEOUT_S} s per student")
        return cfg.CELL_TIMEOUT_S, DEFAULT_STUDENT_TIMEOUT_S
    slowest, total = slowest_cell(outcome.get("timing") or {}), float(outcome["seconds"])
    cell, student = derive_limits(slowest, total)
    ledger.put_limits(db_url, aid, key, cell, student, slowest, total)
    echo(f"time limits: {cell} s per cell, {student} s per student (reference: slowest cell {slowest:.1f} s, "
         f"graded in {total:.1f} s)")
    return cell, student


def grade(path: Path, assignment: str | None = None, *, course_dir: Path | None = None,
          db_url: str | None = None, csv_path: Path | None = None,
          cell_timeout: int | None = None, student_timeout: int | None = None,
          unsafe: bool = False, checks_dir: Path | None = None, echo: bool = True,
          workers: int | None = None, scheduler: str | None = None, force: bool = False) -> list[Result]:
    """Grade every submission under ``path``; return one :class:`Result` per student.

    Each student's kernel runs sandboxed (:mod:`autograder.sandbox`); where the sandbox
    cannot start, grading refuses unless ``unsafe`` (a trusted, single-user setting).
    ``workers`` students at a time (default: one per core) on this machine, or on the Dask
    cluster at ``scheduler`` (``"local"``: a ``LocalCluster`` of ``workers`` processes).
    ``cell_timeout``/``student_timeout`` None: measured from the reference solution
    (:func:`autograder.scale.derive_limits`). Students whose record says they were graded from
    the same notebook and inputs are not graded again unless ``force``.
    """
    from autograder.progress import Progress
    from autograder.scale import Bundle, Task, bundle_sha256, code_hashes, default_workers, make_pool

    if not unsafe and not scheduler:
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
    aid = assignment
    nb_names = sorted(p.name for p in (course_dir / cfg.SOURCE / aid).glob("*.ipynb"))
    workers = workers or default_workers()

    def say(line: str) -> None:
        if echo:
            print(line, flush=True)

    log_dir = course_dir / "grading-logs" / aid
    log_dir.mkdir(parents=True, exist_ok=True)
    if not unsafe and not scheduler:
        from autograder.sandbox import describe_limits

        say(f"sandbox limits per kernel: {describe_limits()}")
    ledger.ensure_tables(db_url)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="grading-") as staging:
        staging = Path(staging)
        # the gradebook must know the assignment as released (locked cells, grade cells); the
        # release is also what tampered locked cells are restored from
        template, release_bytes = _release(course_dir, aid, staging, db_url)
        releases = {n: nbformat.reads(release_bytes[n].decode(), as_version=4) for n in nb_names}
        history = release_history(course_dir / cfg.RELEASE / aid)  # what earlier releases had: not tampering
        checks = _checks_file(aid, checks_dir)
        bundle = Bundle(aid, template, _assignment_files(course_dir, aid), checks, code_hashes(checks),
                        cell_timeout or 0, student_timeout or 0, sandbox=not unsafe,
                        threads=None if scheduler not in (None, "local") else max(1, (os.cpu_count() or 1) // workers))
        subs = collect(Path(path), staging / "collected", nb_names)
        pool = make_pool(workers, scheduler)
        progress = None
        try:
            if not cell_timeout or not student_timeout:
                cell, student = _limits(pool, bundle, release_bytes, course_dir, aid, nb_names, releases, db_url, say)
                bundle.cell_timeout, bundle.student_timeout = cell_timeout or cell, student_timeout or student
            inputs = bundle_sha256(bundle, release_bytes)
            previous = {} if force else ledger.records(db_url, aid)
            jobs: list[tuple[_Job, dict[str, bytes]]] = []
            skipped = 0
            for sub in subs:
                if sub.problem:
                    r = Result(sub.student, status="invalid", message=sub.problem)
                    _clear_graded(course_dir, aid, sub.student)
                    ledger.commit_outcome(db_url, _record(aid, r, "", inputs), None)
                    results.append(r)
                    continue
                raw = {n: (p.read_bytes() if p is not None else None) for n, p in sub.notebooks.items()}
                digest = ledger_digest(raw)
                rec = previous.get(sub.student)
                if (rec is not None and rec.submission_sha256 == digest and rec.inputs_sha256 == inputs
                        and rec.status in ledger.FINAL
                        and (rec.status != "graded" or ledger.has_submission(db_url, aid, sub.student))):
                    results.append(_from_record(rec, db_url, aid))
                    skipped += 1
                    continue
                try:
                    planned = _plan(course_dir, aid, sub, digest, releases, history, db_url, inputs)
                except Exception as e:  # never let one student stop the others
                    planned = Result(sub.student, status="failed", message=f"{type(e).__name__}: {e}"[:300])
                if isinstance(planned, Result):
                    results.append(planned)
                else:
                    jobs.append(planned)
            done = len(results)
            if skipped:
                say(f"{skipped} student(s) already graded from the same notebook and inputs: kept "
                    "(--force grades them again)")
            say(f"grading {len(jobs)} student(s), {pool.slots} at a time "
                f"({bundle.cell_timeout} s per cell, {bundle.student_timeout} s per student)")
            progress = Progress(len(subs), done=done, enabled=None if echo else False)
            ref = pool.prepare(bundle)
            pending = {pool.submit(ref, Task(job.sub.student, notebooks)): job for job, notebooks in jobs}
            while pending:
                finished = [f for f in pending if f.done()]
                if not finished:
                    progress.set_running(pool.running_now(len(pending)))
                    time.sleep(0.2)
                    continue
                for fut in finished:
                    job = pending.pop(fut)
                    sid = job.sub.student
                    try:
                        r = _finish(course_dir, db_url, aid, job, fut.result(), log_dir, inputs)
                    except Exception as e:  # never let one student stop the others
                        r = Result(sid, status="failed", message=f"{type(e).__name__}: {e}"[:300])
                        try:  # not recorded: graded again next time
                            ledger.commit_outcome(db_url, _record(aid, r, "", ""), None)
                        except Exception:
                            pass
                    results.append(r)
                    done += 1
                    progress.finished(r.status not in ("graded", "missing", "invalid"))
                    if echo:
                        progress.write(f"[{done}/{len(subs)}] {sid}: {r.status} "
                                       f"{r.auto_score:g}/{r.auto_max:g} ({r.seconds:.1f} s)")
                progress.set_running(pool.running_now(len(pending)))
        except BaseException:
            pool.close(cancel=True)
            raise
        else:
            pool.close()
        finally:
            if progress is not None:
                progress.close()
    results.sort(key=lambda r: r.student)
    max_auto = max((r.auto_max for r in results if r.status == "graded"), default=0.0)
    max_total = max((r.max_score for r in results if r.status == "graded"), default=0.0)
    for r in results:
        if r.status != "graded":
            r.auto_max, r.max_score = max_auto, max_total
    write_csv(results, csv_path or course_dir / f"grades-{aid}.csv", aid)
    if echo:
        print(format_table(results, aid))
        print(f"\nCSV: {csv_path or course_dir / f'grades-{aid}.csv'}")
        print(f"feedback: {course_dir / 'feedback'}/<student>/{aid}/")
        print(f"logs: {log_dir}")
        print(f"class report: python -m autograder report {aid}")
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
