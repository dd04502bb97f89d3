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

The mutation score of each assignment is printed in the test run's summary.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from autograder import mutants as M
from autograder.sandbox import check_available
from conftest import MUTATION_REPORTS

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


@pytest.mark.skipif(check_available() is not None, reason=f"no sandbox here: {check_available()}")
@pytest.mark.parametrize("aid", ASSIGNMENTS)
def test_mutants_are_killed_once_and_correct_variants_keep_every_point(aid):
    mutants = M.load(aid)
    baseline, outcomes = M.run(aid, mutants, echo=False)
    text = M.report(aid, baseline, outcomes)
    MUTATION_REPORTS.mkdir(parents=True, exist_ok=True)
    (MUTATION_REPORTS / f"{aid}.txt").write_text(text + "\n")
    print(text)
    assert not M.baseline_problems(baseline), text
    assert not [o for o in outcomes if o.problems], text
