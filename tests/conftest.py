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
