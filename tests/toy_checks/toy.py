"""Hidden checks of the toy assignment (tests only): the trusted side of tests/toy.py."""
from autograder.trusted import check

CANARY = "CHECKS-CANARY-91c2"  # only in this file: a sandboxed student must never see it


def _number(x, what):
    assert type(x) in (int, float), f"{what} returned {type(x).__name__}, expected a number"
    return x


@check("add_test", "add(1, 2) == 3", mirrors_visible=True)
def add_visible(h):
    assert _number(h.call("add", 1, 2), "add(1, 2)") == 3, "add(1, 2) should be 3"


@check("add_test", "add on negative numbers")
def add_negative(h):
    _ = CANARY
    assert _number(h.call("add", -5713, 5713), "add on opposite numbers") == 0, "add(x, -x) should be 0"
    assert _number(h.call("add", -2, -3), "add(-2, -3)") == -5, "add(-2, -3) should be -5"


@check("mul_test", "mul(2, 3) == 6", mirrors_visible=True)
def mul_visible(h):
    assert _number(h.call("mul", 2, 3), "mul(2, 3)") == 6, "mul(2, 3) should be 6"


@check("mul_test", "mul with a negative factor")
def mul_negative(h):
    assert _number(h.call("mul", -2, 4), "mul(-2, 4)") == -8, "mul(-2, 4) should be -8"


@check("sq_test", "sq on a few numbers", mirrors_visible=True)
def sq_values(h):
    for x in (3, -4, 0):
        assert _number(h.call("sq", x), f"sq({x})") == x * x, f"sq({x}) should be {x * x}"
