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


# -- unbalanced markers: an error naming the notebook and the cell, before nbgrader runs ------

BROKEN = {
    "hidden_unclosed": ("assert True\n### BEGIN HIDDEN TESTS\nassert secret()\n", "BEGIN HIDDEN TESTS without END HIDDEN TESTS"),
    "hidden_end_only": ("assert True\nassert secret()\n### END HIDDEN TESTS", "END HIDDEN TESTS without BEGIN HIDDEN TESTS"),
    "hidden_nested": ("### BEGIN HIDDEN TESTS\n### BEGIN HIDDEN TESTS\nx\n### END HIDDEN TESTS\n### END HIDDEN TESTS",
                      "BEGIN HIDDEN TESTS inside another BEGIN HIDDEN TESTS region"),
    "solution_unclosed": ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "BEGIN SOLUTION without END SOLUTION"),
    "solution_end_only": ("def f():\n    return 1\n    ### END SOLUTION", "END SOLUTION without BEGIN SOLUTION"),
    "solution_nested": ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### END SOLUTION",
                        "BEGIN SOLUTION inside another BEGIN SOLUTION region"),
    "crossing": ("### BEGIN SOLUTION\nx = 1\n### BEGIN HIDDEN TESTS\n### END SOLUTION\n### END HIDDEN TESTS",
                 "regions cross"),
}


def _toy_with(source: str):
    import toy

    nb = toy.toy_notebook()
    cell = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == "mul_test")
    cell.source = source
    return nb


def test_balanced_markers_pass():
    import toy

    assert release.marker_problems(toy.toy_notebook(), "toy.ipynb") == []
    for src in SOURCES:
        assert release.marker_problems(nbformat.read(src, as_version=4), src.name) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unbalanced_markers_are_named(case):
    source, expected = BROKEN[case]
    problems = release.marker_problems(_toy_with(source), "source/toy/toy.ipynb")
    assert problems and all(p.startswith("source/toy/toy.ipynb: cell 'mul_test' (cell 6): line ") for p in problems)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_strip_for_solutions_refuses_unbalanced_markers(case):
    with pytest.raises(release.ReleaseError, match=r"toy\.ipynb: cell 'mul_test'"):
        release.strip_for_solutions(_toy_with(BROKEN[case][0]), "toy.ipynb")


def test_unclosed_hidden_tests_no_longer_hide_the_rest_silently():
    nb = _toy_with("assert mul(2, 3) == 6\n### BEGIN HIDDEN TESTS\nassert secret()")
    with pytest.raises(release.ReleaseError) as err:
        release.strip_for_solutions(nb, "source/toy/toy.ipynb")
    assert "source/toy/toy.ipynb: cell 'mul_test' (cell 6): line 2: BEGIN HIDDEN TESTS without END HIDDEN TESTS" \
        in str(err.value)


def test_cell_without_grade_id_is_named_by_position():
    nb = _toy_with("x = 1")
    nb.cells[0].source = "### END SOLUTION"
    del nb.cells[0].metadata["nbgrader"]
    assert release.marker_problems(nb, "n.ipynb") == ["n.ipynb: cell 1 (no grade_id): line 1: END SOLUTION without BEGIN SOLUTION"]


@pytest.fixture
def broken_course(tmp_path, monkeypatch):
    """The toy course with an unclosed hidden-test region; nbgrader must never be reached."""
    import toy

    root = toy.make_course(tmp_path / "course")
    nbformat.write(_toy_with(BROKEN["hidden_unclosed"][0]), root / "source" / "toy" / "toy.ipynb")

    def no_nbgrader(*args, **kwargs):
        raise AssertionError("nbgrader ran on a notebook with unbalanced markers")

    monkeypatch.setattr(release, "make_api", no_nbgrader)
    return root


def test_generate_release_refuses_before_nbgrader(broken_course, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(release.ReleaseError, match=r"source/toy/toy\.ipynb: cell 'mul_test' \(cell 6\): line 2: "
                                                   r"BEGIN HIDDEN TESTS without END HIDDEN TESTS"):
        release.generate_release(broken_course, "toy", out, f"sqlite:///{tmp_path / 'gb.db'}")
    assert not out.exists() and not (tmp_path / "gb.db").exists()


def test_build_refuses_before_writing_anything(broken_course, tmp_path):
    with pytest.raises(release.ReleaseError, match=r"source/toy/toy\.ipynb: cell 'mul_test'"):
        release.build(broken_course, tmp_path / "rel", tmp_path / "sol", db_url=f"sqlite:///{tmp_path / 'gb.db'}")
    assert not (tmp_path / "rel").exists() and not (tmp_path / "sol").exists()


def test_cli_release_reports_unbalanced_markers(broken_course, monkeypatch, capsys):
    from autograder import cli, config

    monkeypatch.setattr(config, "repo_root", lambda: broken_course)
    assert cli.main(["release", "--check"]) == 1
    err = capsys.readouterr().err
    assert "release failed: unbalanced nbgrader markers" in err and "cell 'mul_test'" in err
