"""Hidden checks run in-process against a namespace: the grading agent driven without a kernel.

For tests of a checks module (``tests/test_checks_01.py``): the namespace plays the student's kernel
(the reference solution, or one with a planted mistake) and :func:`run_checks` returns each check's
outcome in a second, where the real path (a sandboxed kernel, ``tests/test_mutants.py``) takes minutes.
The trusted side's references are a separate copy of the reference module, so that a ``forbidden``
reference (which the agent patches in *this* process) stays usable by the checks themselves.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import IPython.display
import nbformat

from autograder import agent
from autograder.trusted import Handle, load_checks


def make_handle(ns: dict, notebook: nbformat.NotebookNode) -> Handle:
    outputs: list[dict] = []

    def run(code: str) -> list[dict]:
        outputs.clear()
        publish, IPython.display.publish_display_data = IPython.display.publish_display_data, \
            lambda data, *a, **k: outputs.append({"output_type": "display_data", "data": data})
        try:
            exec(code, {"get_ipython": lambda: types.SimpleNamespace(user_ns=ns), "__builtins__": __builtins__})
        except Exception as e:  # noqa: BLE001  (what a kernel would report as an error output)
            outputs.append({"output_type": "error", "ename": type(e).__name__, "evalue": str(e)})
        finally:
            IPython.display.publish_display_data = publish
        return list(outputs)

    run(agent.install_code())
    return Handle(run, notebook)


def run_checks(aid: str, ns: dict, notebook: nbformat.NotebookNode, reference_attr: str = "ref") -> dict[tuple, str]:
    """``{(grade_id, check name): "ok" or the failure}`` of every check of ``aid`` against ``ns``."""
    checks = load_checks(aid)
    mod = sys.modules[f"_checks_{aid}"]
    ref = getattr(mod, reference_attr, None)
    if isinstance(ref, types.ModuleType):
        spec = importlib.util.spec_from_file_location(f"_trusted_copy_{ref.__name__}", ref.__file__)
        copy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(copy)
        setattr(mod, reference_attr, copy)
    out: dict[tuple, str] = {}
    try:
        for gid, found in checks.items():
            h = make_handle(ns, notebook)
            for c in found:
                try:
                    c.fn(h)
                    out[(gid, c.name)] = "ok"
                except Exception as e:  # noqa: BLE001
                    out[(gid, c.name)] = f"{type(e).__name__}: {e}"
                finally:
                    h._request("restore_all")
    finally:
        sys.modules.pop("_course_grader_agent", None)
    return out


def namespace(source: str, **extra: Any) -> dict:
    """A notebook-like namespace: ``source`` executed as ``__main__``, then ``extra``."""
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), ns)
    ns.update(extra)
    return ns


def grade_cells(notebook: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """The notebook's locked grade cells (code, graded, not a solution), by grade id."""
    return {c.metadata["nbgrader"]["grade_id"]: c for c in notebook.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")}


def failing(aid: str, reference: str, notebook: nbformat.NotebookNode, patches=(), extra: str = "",
            **names: Any) -> dict[str, list[str]]:
    """The checks of ``aid`` run on ``reference`` (a module's source, run as if it were the notebook) with
    ``patches`` (old, new) applied once each and ``extra`` appended: grade id -> the first line of each failed
    check's message."""
    source = reference
    for old, new in patches:
        assert source.count(old) == 1, f"patch does not apply: {old!r}"
        source = source.replace(old, new)
    ns = namespace(source + "\n" + extra, **names)
    failed: dict[str, list[str]] = {}
    for (gid, _), outcome in run_checks(aid, ns, notebook).items():
        if outcome != "ok":  # the first line of each failed check's message
            failed.setdefault(gid, []).append(outcome.split(": ", 1)[-1].splitlines()[0])
    return failed


def assert_checks_cover(aid: str, notebook: nbformat.NotebookNode) -> None:
    """The checks of ``aid`` cover the notebook's grade cells one to one, each with exactly one mirror of its visible
    asserts and at least one hidden check, no two of one cell named alike; the cell's hidden part only points to them."""
    checks, cells = load_checks(aid), grade_cells(notebook)
    assert sorted(checks) == sorted(cells)
    for gid, found in checks.items():
        assert [c.mirrors_visible for c in found].count(True) == 1, f"{gid}: one mirror of the visible asserts"
        assert len(found) >= 2, f"{gid}: the mirror and at least one hidden check"
        assert len({c.name for c in found}) == len(found), f"{gid}: duplicate check names"
        hidden = cells[gid].source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
        assert hidden.strip() == f"# hidden checks: autograder/checks/{aid}.py (run by the trusted grader)"
