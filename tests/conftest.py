"""Shared fixtures of the test suite."""
from __future__ import annotations

import io
import warnings

import pytest


@pytest.fixture
def quiet(capfd: pytest.CaptureFixture[str]):
    """Fail the test on any warning or any output to stderr (nbgrader scores stderr as 0)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert capfd.readouterr().err == ""


def render(fig, dpi: int = 40) -> None:
    """Draw a figure for real: layout, tick and clipping warnings only show up then."""
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    fig.savefig(io.BytesIO(), format="png", dpi=dpi)


#: where tests/mutation.py leaves each assignment's mutation report (xdist workers cannot print to the
#: controller's summary; the controller reads these files)
MUTATION_REPORTS = __import__("pathlib").Path(__import__("tempfile").gettempdir()) / "course-mutation-reports"


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        import shutil

        shutil.rmtree(MUTATION_REPORTS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or not MUTATION_REPORTS.is_dir():
        return
    reports = sorted(MUTATION_REPORTS.glob("*.txt"))
    if reports:
        terminalreporter.section("mutation scores (tests/mutants/)")
        for path in reports:
            terminalreporter.write_line(path.read_text().splitlines()[0])


#: Files that take minutes, longest first. ``make test`` hands whole files to two workers in collection order
#: (``--dist loadfile``): collected alphabetically, the mutation suites came last and one worker ran them alone for
#: minutes while the other had finished; started first, both workers end together.
SLOW_FIRST = ("test_mutants_01.py", "test_mutants_02.py", "test_assignments.py", "test_autograder.py",
              "test_mutants_04.py", "test_mutants_06.py", "test_mutants_05.py", "test_mutants_03.py",
              "test_student_copy.py", "test_sandbox.py", "test_scale.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors, as while grading (the notebooks' setup and the check runner set one thread): a second thread only
    waits for the first on a busy machine (03's F.unfold 20x slower). A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
