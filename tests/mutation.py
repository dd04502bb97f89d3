"""The sandboxed mutation run of one assignment, asserted (``tests/test_mutants.py`` says what): called by
``tests/test_mutants_<NN>.py``, one file per assignment so that the runs, minutes each, spread over the workers."""
from __future__ import annotations

import pytest

from autograder import mutants as M
from autograder.sandbox import check_available
from conftest import MUTATION_REPORTS

needs_sandbox = pytest.mark.skipif(check_available() is not None, reason=f"no sandbox here: {check_available()}")


def check_mutants(aid: str) -> None:
    """Grade every mutant of ``aid``; fail on any baseline problem or any mutant scored wrongly."""
    mutants = M.load(aid)
    baseline, outcomes = M.run(aid, mutants, echo=False)
    text = M.report(aid, baseline, outcomes)
    MUTATION_REPORTS.mkdir(parents=True, exist_ok=True)
    (MUTATION_REPORTS / f"{aid}.txt").write_text(text + "\n")
    print(text)
    assert not M.baseline_problems(baseline), text
    assert not [o for o in outcomes if o.problems], text
