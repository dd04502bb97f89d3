"""Release hygiene: the committed student and solution folders are current, and no
solution code or hidden test reaches a student."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from autograder import release

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "source").glob("*/*.ipynb"))


def _regions(nb, begin: str, end: str) -> list[str]:
    """Non-trivial lines inside begin/end markers of every cell."""
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if begin in line:
                inside = True
            elif end in line:
                inside = False
            elif inside:
                s = line.strip()
                if len(s) > 15 and not s.startswith("#"):
                    lines.append(s)
    return lines


def _public(nb) -> set[str]:
    """Stripped lines of the source outside any solution or hidden-test region."""
    out = set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                inside = False
            elif not inside:
                out.add(line.strip())
    return out


def _code_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells)


def test_there_are_assignments():
    assert SOURCES, "no source notebooks found"


def test_committed_release_is_up_to_date():
    problems = release.check(ROOT)
    assert not problems, "assignments/ or solutions/ is stale; run `make release`:\n" + "\n".join(problems)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.parent.name)
def test_release_holds_no_solution_and_no_hidden_test(src):
    nb = nbformat.read(src, as_version=4)
    student = ROOT / "assignments" / src.parent.name / src.name
    text = _code_text(student)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{student}: contains the marker {marker!r}"
    public = _public(nb)  # a line that is also given to students elsewhere is no leak
    lines = {l.strip() for l in text.splitlines()}
    leaked = [l for l in _regions(nb, "BEGIN SOLUTION", "END SOLUTION") if l in lines and l not in public]
    leaked += [l for l in _regions(nb, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS") if l in lines and l not in public]
    assert not leaked, f"{student} contains solution or hidden-test lines: {leaked[:5]}"
    raw = json.loads(student.read_text())
    assert all(not c.get("outputs") for c in raw["cells"] if c["cell_type"] == "code"), "release has outputs"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.parent.name)
def test_solutions_hold_no_hidden_test(src):
    nb = nbformat.read(src, as_version=4)
    sol = ROOT / "solutions" / src.parent.name / src.name
    text = _code_text(sol)
    assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text
    public = _public(nb) | set(_regions(nb, "BEGIN SOLUTION", "END SOLUTION"))
    lines = {l.strip() for l in text.splitlines()}
    leaked = [l for l in _regions(nb, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS") if l in lines and l not in public]
    assert not leaked, f"{sol} contains hidden-test lines: {leaked[:5]}"
    solution_lines = _regions(nb, "BEGIN SOLUTION", "END SOLUTION")
    assert solution_lines and all(l in text for l in solution_lines), "solutions/ lost solution code"
