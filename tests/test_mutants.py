"""Every hidden check proven to catch a named mistake (``tests/mutants/<assignment>/``, see
:mod:`autograder.mutants`).

The known-wrong solutions of each assignment, and the odd-but-correct variants, are graded
through the path that grades students (the release filled with the solution, the named cells
replaced, run by RobustExecute in a sandboxed kernel with the hidden checks). Asserted:

- the solution itself gets every point, with no REVIEW flag;
- each wrong mutant scores 0 on the grade cells it names and keeps every other point (a
  mistake costs points once), raises no REVIEW flag, and the first line of a message names
  the mistake (its ``hint``);
- each correct variant keeps every point;
- every grade cell has at least two wrong mutants.

The sandboxed runs are in ``tests/test_mutants_<NN>.py`` (one file per assignment, see
``tests/mutation.py``); the mutation score of each assignment is printed in the test run's summary.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from autograder import mutants as M

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = sorted(p.name for p in (ROOT / "tests" / "mutants").iterdir() if p.is_dir()) \
    if (ROOT / "tests" / "mutants").is_dir() else []


def _grade_cells(aid: str) -> list[str]:
    (nb_path,) = (ROOT / "source" / aid).glob("*.ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]


def test_every_assignment_with_grade_cells_has_mutants():
    with_checks = sorted(p.stem for p in (ROOT / "autograder" / "checks").glob("*.py") if not p.stem.startswith("_"))
    missing = [a for a in with_checks if a not in ASSIGNMENTS]
    assert not missing, f"hidden checks without mutants proving them: {missing} (add tests/mutants/<assignment>/)"


@pytest.mark.parametrize("aid", ASSIGNMENTS)
def test_every_grade_cell_has_two_wrong_mutants(aid):
    wrong = [m for m in M.load(aid) if not m.correct]
    for gid in _grade_cells(aid):
        n = sum(gid in m.fails for m in wrong)
        assert n >= 2, f"{aid}: grade cell {gid} has {n} wrong mutants, expected at least 2"
    assert any(m.correct for m in M.load(aid)), f"{aid}: no correct variant (odd but right code that must pass)"


def test_mutant_files_are_checked(tmp_path):
    def parse(text):
        (tmp_path / "m.py").write_text(text)
        return M.parse(tmp_path / "m.py")

    m = parse("# mutant: no scale\n# fails: grade_a grade_b\n# hint: scale\n# %% a\nx = 1\n# %% b\ny = 2\n")
    assert (m.name, m.fails, m.hint, m.cells) == ("m", ("grade_a", "grade_b"), "scale", {"a": "x = 1", "b": "y = 2"})
    assert parse("# mutant: einsum\n# fails: none\n# %% a\nx = 1\n").correct
    for bad, why in (("# fails: none\n# %% a\nx\n", "mutant:"), ("# mutant: x\n# %% a\nx\n", "fails:"),
                     ("# mutant: x\n# fails: g\n# %% a\nx\n", "hint"), ("# mutant: x\n# fails: none\n", "replaces no cell"),
                     ("# mutant: x\n# fails: none\n# %% a\nx\n# %% a\ny\n", "twice")):
        with pytest.raises(M.MutantError, match=re.escape(why)):
            parse(bad)


def test_every_assignment_runs_its_mutants_in_a_file_of_its_own():
    """The sandboxed runs take minutes each: one file per assignment (tests/test_mutants_<NN>.py, a call of
    tests/mutation.py) lets `pytest -n 2 --dist loadfile` put them on different workers."""
    def runs(aid: str) -> bool:
        path = ROOT / "tests" / f"test_mutants_{aid[:2]}.py"
        return path.exists() and f'check_mutants("{aid}")' in path.read_text()

    missing = [aid for aid in ASSIGNMENTS if not runs(aid)]
    assert not missing, f"no tests/test_mutants_<NN>.py runs the mutants of {missing}"
