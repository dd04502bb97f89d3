"""The check builders of autograder/checkkit.py, without a kernel: each passes a right answer and fails a wrong
one with a message that says what is wrong (a fake handle stands for the student's kernel)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checkkit import check_raises, check_vjp, drawn, planted, rint, tensor
from autograder.trusted import StudentError


class FakeHandle:
    """The part of ``autograder.trusted.Handle`` these builders use, on local functions."""

    def __init__(self, **functions):
        self.functions = functions

    def call(self, name, *args, **kwargs):
        try:
            return self.functions[name](*args, **kwargs)
        except Exception as e:  # as the grader sees an exception of the student's code
            raise StudentError(type(e).__name__, str(e), name) from None

    def vjp(self, name, inputs, cotangents, **kwargs):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        outs = self.functions[name](*leaves, **kwargs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [c for _, c in pairs])
        return [leaf.grad for leaf in leaves]


def test_tensor_checks_type_shape_and_dtype():
    x = torch.zeros(2, 3)
    assert tensor(x, "x", shape=(2, 3), dtype=torch.float32) is x
    with pytest.raises(AssertionError, match="x should be a tensor, got a tuple or list"):
        tensor([1, 2], "x")
    with pytest.raises(AssertionError, match="shape"):
        tensor(x, "x", shape=(3, 2))
    with pytest.raises(AssertionError, match=r"x has dtype torch.float32, expected torch.float64 like the inputs"):
        tensor(x, "x", dtype=torch.float64, why=" like the inputs")


def test_drawn_is_the_same_on_every_run_and_leaves_the_generator_alone():
    state = torch.get_rng_state()
    first = drawn(3, 4, lambda i: (i, rint(0, 100)))
    assert first == drawn(3, 4, lambda i: (i, rint(0, 100))) and [i for i, _ in first] == [0, 1, 2, 3]
    assert torch.equal(state, torch.get_rng_state())


def test_planted_puts_back_methods_buffers_and_attributes():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("pe", torch.ones(3))
            self.scale = 2.0

        def forward(self, x):
            return x * self.scale + self.pe

    m, x = Model(), torch.zeros(3)
    with planted([m], "forward", lambda m: lambda x: -x), planted([m], "pe", lambda m: torch.zeros(3)), \
            planted([m], "scale", lambda m: 5.0):
        assert torch.equal(m(x + 1), -torch.ones(3)) and m.scale == 5.0 and torch.equal(m.pe, torch.zeros(3))
    assert torch.equal(m(x), torch.ones(3)) and m.scale == 2.0 and "forward" not in vars(m)
    assert "pe" in m.state_dict() and torch.equal(m.pe, torch.ones(3))


def test_check_vjp_passes_right_gradients_and_fails_a_detached_step():
    q, g = torch.randn(2, 3), torch.randn(2, 3)
    check_vjp(FakeHandle(f=lambda t: t.tanh()), "f", (q,), (g,), torch.tanh, name="tanh", labels="q")
    wrong = FakeHandle(f=lambda t: t.tanh() * t.detach())
    with pytest.raises(AssertionError, match=r"^tanh: gradient with respect to q .*differ"):
        check_vjp(wrong, "f", (q,), (g,), torch.tanh, name="tanh", labels="q")


def test_check_vjp_weights_the_first_outputs_like_the_reference():
    q, g = torch.randn(4), torch.randn(4)
    two = FakeHandle(f=lambda t: (F.softplus(t), t.exp()))
    check_vjp(two, "f", (q,), (g, torch.zeros(4)), F.softplus, name="softplus")
    with pytest.raises(AssertionError, match="gradient with respect to input 0"):
        check_vjp(two, "f", (q,), (g, torch.ones(4)), F.softplus, name="softplus")


def test_check_raises_names_the_expected_error():
    def odd(d):
        if d % 2:
            raise ValueError("odd")
        return d

    check_raises(FakeHandle(pe=odd), "pe", 7, error="ValueError", why="odd d_model")
    with pytest.raises(AssertionError, match=r"^pe\(8\) should raise ValueError \(even is fine here\)"):
        check_raises(FakeHandle(pe=odd), "pe", 8, error="ValueError", why="even is fine here")
    with pytest.raises(AssertionError, match=r"pe\(7\) raised .*expected KeyError"):
        check_raises(FakeHandle(pe=odd), "pe", 7, error="KeyError", why="a key")
