"""A tiny nbgrader course (no torch) for fast tests of the autograder's robustness."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CANARY = "HIDDEN-CANARY-7f3a"  # appears only inside hidden-test regions
CHECKS_DIR = Path(__file__).resolve().parent / "toy_checks"


def _meta(grade_id: str, *, grade=False, solution=False, locked=False, points=None):
    md = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
          "solution": solution, "task": False}
    if points is not None:
        md["points"] = points
    out = {"nbgrader": md}
    if locked:
        out.update(deletable=False, editable=False)
    return out


def toy_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Toy assignment", metadata=_meta("intro", locked=True)),
        new_code_cell("import math", metadata=_meta("setup", locked=True)),
        new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                      metadata=_meta("add", solution=True)),
        new_code_cell("assert add(1, 2) == 3, 'add(1, 2) should be 3'\n"
                      "### BEGIN HIDDEN TESTS\n"
                      f"# {CANARY}: graded by tests/toy_checks/toy.py\n"
                      "### END HIDDEN TESTS",
                      metadata=_meta("add_test", grade=True, locked=True, points=4)),
        new_code_cell("def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n    ### END SOLUTION",
                      metadata=_meta("mul", solution=True)),
        new_code_cell("assert mul(2, 3) == 6\n"
                      "### BEGIN HIDDEN TESTS\n"
                      f"# {CANARY}: graded by tests/toy_checks/toy.py\n"
                      "### END HIDDEN TESTS",
                      metadata=_meta("mul_test", grade=True, locked=True, points=3)),
        new_code_cell("def sq(x):\n    ### BEGIN SOLUTION\n    import warnings\n"
                      "    warnings.warn('a harmless warning on stderr')\n    return x * x\n    ### END SOLUTION",
                      metadata=_meta("sq", solution=True)),
        new_code_cell("assert sq(3) == 9\n### BEGIN HIDDEN TESTS\n# graded by tests/toy_checks/toy.py\n### END HIDDEN TESTS",
                      metadata=_meta("sq_test", grade=True, locked=True, points=3)),
        new_markdown_cell("Why does 1 + 1 = 2?", metadata=_meta("why_q", locked=True)),
        new_markdown_cell("### BEGIN SOLUTION\nBy definition.\n### END SOLUTION",
                          metadata=_meta("why", grade=True, solution=True, points=2)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def make_course(root: Path) -> Path:
    """Write ``root/source/toy/toy.ipynb`` and return ``root``."""
    src = root / "source" / "toy"
    src.mkdir(parents=True)
    nbformat.write(toy_notebook(), src / "toy.ipynb")
    return root


def copy_tree(a: Path, b: Path) -> None:
    shutil.copytree(a, b, dirs_exist_ok=True)
