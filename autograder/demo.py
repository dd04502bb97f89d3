"""``make demo``: release, three sample students, grade, print the gradebook.

The three students of every assignment:

- ``alice_full``    the release with every solution cell filled from ``source/``
- ``bob_blank``     the release as handed out, untouched
- ``carol_partial`` the first half of the solution cells filled

The demo fails (exit 1) unless alice gets every autograded point and bob none.
Everything lands in ``.demo/`` (gradebook, CSV, feedback HTML, logs) for a look.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from autograder import config as cfg
from autograder.grade import grade
from autograder.release import assignments, generate_release, strip_for_solutions


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def fill(release_nb, source_nb, n: int | None = None):
    """The release notebook with its first ``n`` (default all) solution cells answered."""
    solutions = {_grade_id(c): c.source for c in strip_for_solutions(source_nb).cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.from_dict(release_nb)
    filled = 0
    for cell in nb.cells:
        gid = _grade_id(cell)
        if cell.metadata.get("nbgrader", {}).get("solution") and gid in solutions:
            if n is not None and filled >= n:
                break
            cell.source = solutions[gid]
            filled += 1
    return nb


def run(out: Path | None = None) -> int:
    repo = cfg.repo_root()
    out = Path(out or repo / ".demo").resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / cfg.SOURCE).symlink_to(repo / cfg.SOURCE)
    db_url = f"sqlite:///{out / 'gradebook.db'}"
    from autograder.sandbox import check_available

    why = check_available()
    if why:  # the demo grades only notebooks made here from source/: safe without the sandbox
        print(f"note: grading without the sandbox ({why})")
    ok = True
    for aid in assignments(out):
        print(f"== {aid}: release")
        generate_release(out, aid, out / cfg.RELEASE / aid, db_url)
        subs = out / "submissions" / aid
        for nb_path in sorted((out / cfg.RELEASE / aid).glob("*.ipynb")):
            release_nb = nbformat.read(nb_path, as_version=4)
            source_nb = nbformat.read(repo / cfg.SOURCE / aid / nb_path.name, as_version=4)
            n_sol = sum(bool(c.metadata.get("nbgrader", {}).get("solution")) for c in release_nb.cells)
            students = {
                "alice_full": fill(release_nb, source_nb),
                "bob_blank": release_nb,
                "carol_partial": fill(release_nb, source_nb, n_sol // 2),
            }
            for sid, nb in students.items():
                (subs / sid).mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, subs / sid / nb_path.name)
        print(f"== {aid}: grading 3 sample students (quick profile)")
        # the fixed limits: the demo grades only notebooks made here (measuring the reference first would
        # add one more grading per assignment)
        results = {r.student: r for r in grade(subs, aid, course_dir=out, db_url=db_url, unsafe=bool(why),
                                               cell_timeout=cfg.CELL_TIMEOUT_S, student_timeout=1800)}
        alice, bob = results["alice_full"], results["bob_blank"]
        if not (alice.status == "graded" and alice.auto_score == alice.auto_max > 0):
            print(f"FAIL: the full solution got {alice.auto_score:g}/{alice.auto_max:g} ({alice.status}: {alice.message})")
            ok = False
        if not (bob.status == "graded" and bob.auto_score == 0):
            print(f"FAIL: the untouched release got {bob.auto_score:g} points ({bob.status}: {bob.message})")
            ok = False
    print("\ndemo OK: the full solution gets every autograded point, the blank release none" if ok
          else "\ndemo FAILED")
    print(f"open {out}/feedback/<student>/<assignment>/*.html to see what students receive")
    return 0 if ok else 1
