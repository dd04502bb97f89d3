"""Every assignment end to end, CPU, quick profile:

- the source notebook runs top to bottom; each grade cell takes < 2 s and writes
  nothing to stderr; the whole notebook stays under 90 s;
- ``autograder demo``: the full solution gets every autograded point, the untouched
  release zero, nobody's feedback shows a hidden test.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from autograder import demo

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "source").glob("*/*.ipynb"))
GRADE_CELL_S = 2.0
NOTEBOOK_S = 90.0


def _seconds(cell) -> float:
    ex = cell.metadata.get("execution", {})
    t0, t1 = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (t0 and t1):
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(t1) - parse(t0)).total_seconds()


@pytest.mark.slow
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.parent.name)
def test_source_notebook_runs_fast_and_clean(src, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(src, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(src.parent)}}).execute()
    total = time.perf_counter() - t0
    assert total < NOTEBOOK_S, f"{src.name} took {total:.0f} s in the quick profile (limit {NOTEBOOK_S:.0f} s)"
    slow, noisy = [], []
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not md.get("grade") or md.get("solution"):
            continue
        if _seconds(cell) > GRADE_CELL_S:
            slow.append(f"{md['grade_id']} ({_seconds(cell):.2f} s)")
        if any(o.get("name") == "stderr" for o in cell.outputs):
            noisy.append(md["grade_id"])
    assert not slow, f"grade cells slower than {GRADE_CELL_S} s: {slow}"
    assert not noisy, f"grade cells writing to stderr (nbgrader would score them 0): {noisy}"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    assert demo.run(tmp_path / "demo") == 0
    hidden = []
    for src in SOURCES:
        nb = nbformat.read(src, as_version=4)
        for cell in nb.cells:
            inside = False
            for line in cell.source.splitlines():
                if "BEGIN HIDDEN TESTS" in line:
                    inside = True
                elif "END HIDDEN TESTS" in line:
                    inside = False
                elif inside and len(line.strip()) > 20 and not line.strip().startswith("#"):
                    hidden.append(line.strip())
    # the hidden checks of each grade cell (trusted side, full solution) also fit in 2 s
    import json

    for report in (tmp_path / "demo" / "grading-logs").rglob("alice_full.trusted.json"):
        verdicts = json.loads(report.read_text())
        assert verdicts and all(v["passed"] for v in verdicts.values()), verdicts
        slow = {g: v["seconds"] for g, v in verdicts.items() if v["seconds"] > GRADE_CELL_S}
        assert not slow, f"hidden checks slower than {GRADE_CELL_S} s per grade cell: {slow}"
    # carol answered the first half of the solution cells: exactly the grade cells of those pass
    # (each grade cell grade_<x> grades the solution cell <x>; the others score 0)
    for src in SOURCES:
        aid = src.parent.name
        report = tmp_path / "demo" / "grading-logs" / aid / "carol_partial.trusted.json"
        if not report.exists():
            continue
        sol = [c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(src, as_version=4).cells
               if c.metadata.get("nbgrader", {}).get("solution")]
        filled = set(sol[: len(sol) // 2])
        got = {g: v["passed"] for g, v in json.loads(report.read_text()).items()}
        assert got == {g: g.removeprefix("grade_") in filled for g in got}, (filled, got)
    pages = list((tmp_path / "demo" / "feedback").rglob("*.html"))
    assert len(pages) == 3 * len(SOURCES), pages
    import html
    import re

    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        leaked = [h for h in hidden if h in text]
        assert not leaked, f"{page}: hidden tests leaked into feedback: {leaked[:3]}"
