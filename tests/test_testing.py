"""course.testing: every check passes on correct input and says what/where/why on wrong input."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course import nn as cnn
from course.testing import (
    CheckError,
    check_causal,
    check_close,
    check_no_delegation,
    check_permutation_equivariance,
    check_rows_sum_to_one,
    check_shape,
    check_zero_where,
    passed,
    rel_error,
    seeded,
)

DIMS = ("batch", "head", "query", "key")


@pytest.fixture(autouse=True)
def _no_warnings_no_stderr(capfd: pytest.CaptureFixture[str]):
    """No check may warn or write to stderr (nbgrader scores stderr as failure)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not caught, [str(w.message) for w in caught]
    assert capfd.readouterr().err == ""


def _fails(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, AssertionError)
    return str(info.value)


def _qkv(B=2, H=4, T=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g) for _ in range(3))


# ----------------------------------------------------------------------------- shapes


def test_check_shape_passes_with_wildcards_and_names():
    x = torch.zeros(2, 5, 16)
    check_shape(x, (2, 5, 16))
    check_shape(x, (None, -1, 16))
    assert check_shape(x, ("B", "T", "C")) == {"B": 2, "T": 5, "C": 16}
    check_shape(x, torch.Size([2, 5, 16]))


def test_check_shape_reports_the_differing_dim():
    msg = _fails(check_shape, torch.zeros(2, 5, 16), (2, 4, 16), name="attention output")
    assert "attention output has shape (2, 5, 16) but expected (2, 4, 16): dim 1 differs" in msg


def test_check_shape_names_dims_and_hints():
    msg = _fails(check_shape, torch.zeros(2, 16, 5), (2, 5, 16), dims=("B", "T", "C"))
    assert "dim 1 (T)" in msg and "dim 2 (C)" in msg and "wrong order" in msg
    msg = _fails(check_shape, torch.zeros(2, 16), (2, 4, 16))
    assert "2 dims" in msg and "missing" in msg
    msg = _fails(check_shape, torch.zeros(2, 5, 8), ("B", "T", "B"))
    assert "'B'" in msg


@pytest.mark.parametrize(
    "value, fragment",
    [(None, "got None — did you forget to `return`"), ([1.0], "got list"), (np.zeros(3), "got ndarray"), (1.5, "got float")],
)
def test_non_tensor_inputs_are_named(value, fragment):
    assert fragment in _fails(check_shape, value, (3,))
    assert fragment in _fails(check_close, value, torch.zeros(3))


# ----------------------------------------------------------------------------- values


def test_check_close_passes_and_tolerates_devices_grads_dtypes():
    q, k, _ = _qkv()
    ref = q @ k.transpose(-2, -1)
    check_close(ref.clone().requires_grad_(), ref)
    check_close(ref.double(), ref)
    check_close(torch.tensor(3.0), 3.0)


def test_check_close_names_worst_element_with_dims():
    q, k, _ = _qkv()
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1)
    bad = ref.clone()
    bad[0, 2, 3, 1] += 0.5
    msg = _fails(check_close, bad, ref, dims=DIMS, name="attention weights")
    assert "batch 0, head 2, query 3, key 1 differs" in msg
    assert "over 1/200 elements" in msg and "max abs error 5.0e-01" in msg
    assert f"expected {ref[0, 2, 3, 1].item():.4g}" in msg


def test_check_close_puts_localised_dims_first():
    _, _, v = _qkv()
    bad = v.clone()
    bad[:, 2] *= 2
    msg = _fails(check_close, bad, v, dims=("batch", "head", "query", "channel"))
    assert "head 2 differs (batch " in msg
    assert "all mismatches are in head 2" in msg


def test_check_close_hints_sqrt_dk_factor():
    q, k, _ = _qkv(D=8)
    scores = q @ k.transpose(-2, -1)
    msg = _fails(check_close, scores, scores / math.sqrt(8), dims=DIMS, name="scores")
    assert "constant factor 2.83 (= sqrt(8)?)" in msg and "sqrt(d_k)" in msg
    msg = _fails(check_close, scores / 8, scores / math.sqrt(8), name="scores")
    assert "1/sqrt(8)" in msg


def test_check_close_hints_transposed():
    q, k, _ = _qkv()
    ref = torch.softmax(q @ k.transpose(-2, -1), -1)
    msg = _fails(check_close, ref.transpose(-2, -1), ref, dims=DIMS)
    assert "transposed over the last two dims" in msg
    # non-square: already the shape tells
    w = torch.rand(2, 3, 4)
    msg = _fails(check_close, w.transpose(-2, -1), w)
    assert "has shape (2, 4, 3) but expected (2, 3, 4)" in msg and "transposed" in msg


def test_check_close_hints_softmax_over_wrong_dim():
    q, k, _ = _qkv()
    s = q @ k.transpose(-2, -1)
    msg = _fails(check_close, s.softmax(-2), s.softmax(-1), dims=DIMS)
    assert "sum to 1 over dim 2" in msg and "wrong dim" in msg


def test_check_close_hints_scrambled_heads():
    x = torch.randn(2, 5, 32)
    bad = x.view(2, 5, 4, 8).transpose(1, 2).reshape(2, 5, 32)  # heads merged without transposing back
    msg = _fails(check_close, bad, x)
    assert "right values in the wrong places" in msg


def test_check_close_hints_lower_precision():
    """A result computed in float16 is close, not scrambled: the hint says precision, not heads."""
    q, k, _ = _qkv()
    s = (q @ k.transpose(-2, -1)).softmax(-1)
    bad = (q.half() @ k.half().transpose(-2, -1)).float().softmax(-1)
    msg = _fails(check_close, bad, s, atol=1e-6, rtol=1e-6)
    assert "lower precision" in msg and "wrong places" not in msg


def test_check_close_names_a_result_of_another_float_dtype():
    """float32 work on float64 inputs (a buffer made with torch.zeros): the message says so, not "a constant offset"
    (06's reviewer: "got -4.388, expected -4.388" and nothing else)."""
    x = torch.randn(3, 4, dtype=torch.float64)
    msg = _fails(check_close, x.float(), x, atol=1e-10, rtol=1e-8, name="out")
    assert "out is torch.float32 where torch.float64 was expected" in msg and "offset" not in msg


def test_check_close_reports_nan_and_zeros_and_dtype():
    ref = torch.rand(3, 4)
    bad = ref.clone()
    bad[1, 2] = float("nan")
    msg = _fails(check_close, bad, ref, dims=("query", "key"))
    assert "1 NaN value" in msg and "query 1, key 2" in msg and "masked" in msg
    assert "all zeros" in _fails(check_close, torch.zeros(3, 4), ref)
    msg = _fails(check_close, torch.ones(3, 4, dtype=torch.long), ref)
    assert "dtype torch.int64" in msg and "floating point" in msg


def test_check_close_appends_caller_hint():
    msg = _fails(check_close, torch.ones(2), torch.zeros(2), hint="see equation (1)")
    assert msg.endswith("see equation (1)")


class _Liar(torch.Tensor):
    """A tensor subclass that claims to equal everything."""

    def __eq__(self, other):  # type: ignore[override]
        return True

    def allclose(self, *args, **kwargs):  # type: ignore[override]
        return True

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__eq__ or func is torch.allclose or func is torch.Tensor.allclose:
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_check_close_does_not_trust_the_object():
    ref = torch.rand(4)
    liar = torch.zeros(4).as_subclass(_Liar)
    assert "differs" in _fails(check_close, liar, ref)
    check_close(ref.clone().as_subclass(_Liar), ref)


def test_rel_error():
    assert rel_error(torch.ones(3), torch.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert rel_error(torch.tensor([2.0, 1.0]), [2.0, 1.001]) == pytest.approx(0.001 / 2.001)


# ----------------------------------------------------------------------------- weights


def test_check_rows_sum_to_one():
    s = torch.randn(2, 4, 5, 5)
    check_rows_sum_to_one(s.softmax(-1))
    msg = _fails(check_rows_sum_to_one, s.softmax(-2), dims=DIMS)
    assert "do not sum to 1 over dim 3 (key)" in msg and "dim 2 (query) instead" in msg
    assert "negative" in _fails(check_rows_sum_to_one, s)
    w = s.softmax(-1)
    w[0, 0, 1] = float("nan")
    assert "NaN" in _fails(check_rows_sum_to_one, w)


def test_check_zero_where():
    scores = torch.randn(2, 1, 4, 5)
    pad = torch.zeros(2, 1, 1, 5, dtype=torch.bool)
    pad[1, ..., 3:] = True
    good = scores.masked_fill(pad, float("-inf")).softmax(-1)
    check_zero_where(good, pad)
    msg = _fails(check_zero_where, scores.softmax(-1), pad, dims=DIMS)
    assert "should be 0 on padding" in msg and "batch 1, head 0, query 0, key 3" in msg and "before the softmax" in msg
    inverted = scores.masked_fill(~pad, float("-inf")).softmax(-1)
    inverted = torch.nan_to_num(inverted)
    assert "inverted" in _fails(check_zero_where, inverted[1:], pad[1:], what="future")
    assert "does not broadcast" in _fails(check_zero_where, good, torch.zeros(3, dtype=torch.bool))


# ----------------------------------------------------------------------------- function properties


def _mha(seed=0):
    torch.manual_seed(seed)
    return cnn.MultiHeadAttention(16, 4).eval()


def test_permutation_equivariance():
    mha = _mha()
    x = torch.randn(2, 6, 16)
    check_permutation_equivariance(lambda t: mha(t, t, t), x)
    pe = cnn.sinusoidal_positional_encoding(6, 16)

    def with_positions(t):
        return mha(t + pe, t + pe, t + pe)[0]

    msg = _fails(check_permutation_equivariance, with_positions, x)
    assert "with_positions is not permutation-equivariant along dim 1" in msg
    assert "output position 0" in msg and "positional encodings" in msg


def test_nondeterministic_fn_is_named():
    drop = torch.nn.Dropout(0.5).train()
    assert "call .eval()" in _fails(check_permutation_equivariance, drop, torch.randn(1, 8, 4))


def test_check_causal():
    mha = _mha()
    x = torch.randn(2, 6, 16)
    mask = cnn.causal_mask(6)
    check_causal(lambda t: mha(t, t, t, mask=mask)[0], x)
    msg = _fails(check_causal, lambda t: mha(t, t, t)[0], x, name="no mask")
    assert "no mask is not causal along dim 1" in msg
    assert "output at position 0 changes when the input at future position 1" in msg

    leaky_mask = mask.clone()
    leaky_mask[2, 4] = True
    msg = _fails(check_causal, lambda t: mha(t, t, t, mask=leaky_mask)[0], x)
    assert "position 2 sees future position 4" in msg


def test_check_causal_with_token_ids():
    emb = torch.nn.Embedding(10, 16)
    mha = _mha()
    ids = torch.randint(0, 10, (2, 5))

    def lm(t):
        h = emb(t)
        return mha(h, h, h, mask=cnn.causal_mask(5))[0]

    check_causal(lm, ids)


# ----------------------------------------------------------------------------- delegation

FORBIDDEN = {
    "scaled_dot_product_attention": "implement softmax(QK^T/sqrt(d_k))V yourself",
    "MultiheadAttention": "build it from nn.Linear layers",
    "course.nn": "the reference blocks are what you are graded against",
}


def _delegating_attr(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def _delegating_full_path(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _delegating_getattr(q, k, v):
    name = "scaled_" + "dot_product_" + "attention"
    return getattr(F, name)(q, k, v)


def _delegating_eval(q, k, v):
    return eval("F.scaled_dot" + "_product_attention")(q, k, v)


class _DelegatingModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.MultiheadAttention(8, 2, batch_first=True)


def scaled_dot_product_attention(q, k, v):  # noqa: D103 - a student's own function with the graded name
    """Computes what F.scaled_dot_product_attention computes, by hand."""
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    return w @ v


class _OwnMHA(torch.nn.Module):
    def forward(self, q, k, v):
        return scaled_dot_product_attention(q, k, v)


def _uses_helper(q, k, v):
    return _delegating_attr(q, k, v)


def test_no_delegation_accepts_own_code():
    check_no_delegation(scaled_dot_product_attention, FORBIDDEN)  # its docstring mentions F.sdpa
    check_no_delegation(_OwnMHA, FORBIDDEN)
    check_no_delegation(_OwnMHA(), FORBIDDEN)
    src = (
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        self.inner.eval()  # attention, not MultiheadAttention\n"
        "        return torch.compile(self.inner)(self.scaled_dot_product_attention(x))\n"
    )
    check_no_delegation(src, FORBIDDEN)


@pytest.mark.parametrize(
    "obj, fragment",
    [
        (_delegating_attr, "`F.scaled_dot_product_attention`"),
        (_delegating_full_path, "`torch.nn.functional.scaled_dot_product_attention`"),
        (_delegating_getattr, "spells out the forbidden name 'scaled_dot_product_attention'"),
        (_delegating_eval, "`eval`"),
        (_DelegatingModule, "`torch.nn.MultiheadAttention`"),
        (_uses_helper, "_delegating_attr must not use `F.scaled_dot_product_attention`"),
        (cnn.MultiHeadAttention, "must not use `F.scaled_dot_product_attention`"),
        ("from course.nn import MultiHeadAttention as M\n", "from course.nn import MultiHeadAttention"),
        ("import course.nn as cnn\n", "import course.nn"),
        ("from course import nn\n", "from course import nn"),
        ("import importlib\nm = importlib.import_module('course.' + 'nn')\n", "course.nn"),
    ],
)
def test_no_delegation_catches(obj, fragment):
    msg = _fails(check_no_delegation, obj, FORBIDDEN)
    assert fragment in msg, msg
    key = next(k for k in FORBIDDEN if k in msg)
    assert FORBIDDEN[key] in msg


_GLOBAL_ATTN = torch.nn.MultiheadAttention(8, 2)


def _uses_global_instance(x):
    return _GLOBAL_ATTN(x, x, x)


def test_no_delegation_sees_global_instances():
    msg = _fails(check_no_delegation, _uses_global_instance, FORBIDDEN)
    assert "`_GLOBAL_ATTN`" in msg and "MultiheadAttention" in msg


def test_no_delegation_names_the_line():
    src = "def f(q, k, v):\n    import torch.nn.functional as F\n    return F.scaled_dot_product_attention(q, k, v)\n"
    assert "(line 3)" in _fails(check_no_delegation, src, FORBIDDEN)


# ----------------------------------------------------------------------------- helpers


def test_seeded_is_reproducible_and_restores_state():
    torch.manual_seed(123)
    random.seed(123)
    before = (torch.rand(1), random.random())
    torch.manual_seed(123)
    random.seed(123)
    with seeded(7):
        a = (torch.rand(2), random.random(), np.random.rand())
    after = (torch.rand(1), random.random())
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    with seeded(7):
        b = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_passed_prints_to_stdout(capfd: pytest.CaptureFixture[str]):
    passed("scaled_dot_product_attention", 4)
    passed("done")
    out = capfd.readouterr().out
    assert "\u2714 scaled_dot_product_attention: 4 checks passed" in out
    assert "\u2714 done" in out


def test_no_delegation_on_a_class_defined_in_a_notebook_cell():
    """Before Python 3.13 a cell's class has no findable source; its methods do."""
    import linecache

    cell = (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "class CellMHA(torch.nn.Module):\n"
        "    def forward(self, q, k, v):\n"
        "        return F.scaled_dot_product_attention(q, k, v)\n"
    )
    filename = "<ipython-input-42-cafe>"
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    ns: dict = {"__name__": "notebook_cell_without_module"}
    exec(compile(cell, filename, "exec"), ns)
    try:
        msg = _fails(check_no_delegation, ns["CellMHA"], FORBIDDEN)
        assert "CellMHA.forward must not use `F.scaled_dot_product_attention` (line 5)" in msg
    finally:
        del linecache.cache[filename]


def test_the_readme_example_message_is_one_the_checks_print():
    """The student section of the README quotes a check message: it must be a real one."""
    import math
    from pathlib import Path

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    scores = q @ k.transpose(-2, -1)
    with pytest.raises(AssertionError) as e:
        check_close(scores, scores / math.sqrt(8), name="attention scores", dims=("batch", "head", "query", "key"))
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for line in str(e.value).splitlines():
        assert line in readme, f"README's example message is out of date; the check prints:\n{e.value}"
