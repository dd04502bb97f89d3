"""Checks for exercises: small, explicit, and loud about *what* is wrong and *where*.

Used by the visible check cells that students run and by the hidden grade cells.
Every failure raises :class:`CheckError` (an ``AssertionError``, so nbgrader and
pytest count it as a failed test) whose message says

1. what is wrong ("attention output has shape (2, 5, 16) but expected (2, 4, 16)"),
2. where ("head 2, query 5 differs (batch 0, key 3)"), and
3. what is probably wrong ("did you scale by sqrt(d_k)?").

Nothing here writes to stderr or emits warnings (nbgrader scores any stderr output
as a failure); successes are reported on stdout by :func:`passed`.

The values under test come from student code, so they are treated as hostile: they
are copied with plain torch ops (``detach().to(float64).cpu()``, with
``__torch_function__`` overrides disabled) before anything is computed on them, and
their own ``__eq__``/``__bool__``/``shape`` are never trusted.

Example::

    out = scaled_dot_product_attention(q, k, v)
    check_shape(out, (B, T, C), name="attention output")
    check_close(out, ref, dims=("batch", "query", "channel"), name="attention output")
    passed("scaled_dot_product_attention", 2)
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import math
import random
import textwrap
import types
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "CheckError",
    "check_shape",
    "check_close",
    "rel_error",
    "check_rows_sum_to_one",
    "check_zero_where",
    "check_permutation_equivariance",
    "check_causal",
    "check_no_delegation",
    "seeded",
    "passed",
    "randomize_norms",
    "CountingModel",
    "greedy_one_by_one",
    "FixedLogits",
]

_HINT_MAX_NUMEL = 4_000_000  # skip the diagnostic hints above this many elements


class CheckError(AssertionError):
    """A check failed; the message says what is wrong, where, and what to try."""


# ----------------------------------------------------------------------------
# safe copies and formatting


def _typename(x: Any) -> str:
    return type(x).__name__


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """A plain float64 CPU copy of a student's tensor (never a view, never a subclass)."""
    if x is None:
        raise CheckError(
            f"{name}: expected a torch.Tensor, got None — did you forget to `return` it?"
        )
    if not issubclass(type(x), torch.Tensor):  # `isinstance` can be fooled by __class__
        extra = ""
        if issubclass(type(x), (tuple, list)):
            extra = f" of length {len(x)} — return the tensor itself, not a {_typename(x)}"
        elif type(x).__module__.startswith("numpy"):
            extra = " — use torch operations (or torch.from_numpy) so the result is a tensor"
        elif issubclass(type(x), (int, float, bool)):
            extra = " — did you call .item() or return a Python number?"
        raise CheckError(f"{name}: expected a torch.Tensor, got {_typename(x)}{extra}")
    try:
        with torch._C.DisableTorchFunctionSubclass():
            t = torch.Tensor.detach(x)
            if t.is_sparse:
                t = t.to_dense()
            if t.is_complex():
                raise CheckError(f"{name} has complex dtype {t.dtype}; expected real values")
            t = t.to(device="cpu", dtype=torch.float64, copy=True)
    except CheckError:
        raise
    except Exception as e:  # meta tensors, broken subclasses, ...
        raise CheckError(f"{name}: could not read the tensor ({_typename(e)}: {e})") from None
    if type(t) is not torch.Tensor:
        raise CheckError(f"{name}: expected a plain torch.Tensor, got a {_typename(x)}")
    return t


def _dtype_of(x: torch.Tensor) -> torch.dtype:
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.detach(x).dtype


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _fmt_shape(shape: Sequence[Any]) -> str:
    inner = ", ".join("*" if s is None or s == -1 else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _fmt_num(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.4g}"


def _dim_label(d: int, dims: Sequence[str] | None) -> str:
    if dims is not None and d < len(dims):
        return f"dim {d} ({dims[d]})"
    return f"dim {d}"


def _split_index(
    idx: Sequence[int], dims: Sequence[str] | None, lead: Sequence[int] = ()
) -> tuple[str, str]:
    """``("head 2, query 5", "batch 0, key 3")``: the dims in ``lead`` first, the rest second."""
    idx = [int(i) for i in idx]
    if dims is None or len(dims) != len(idx):
        return "index " + (f"({idx[0]},)" if len(idx) == 1 else str(tuple(idx))), ""
    if not idx:
        return "the scalar", ""
    first = [d for d in lead if d < len(idx)] or list(range(len(idx)))
    rest = [d for d in range(len(idx)) if d not in first]
    return (
        ", ".join(f"{dims[d]} {idx[d]}" for d in first),
        ", ".join(f"{dims[d]} {idx[d]}" for d in rest),
    )


def _fmt_index(idx: Sequence[int], dims: Sequence[str] | None, lead: Sequence[int] = ()) -> str:
    """``index (0, 2, 5, 3)`` or, with dims, ``head 2, query 5 (batch 0, key 3)``."""
    first, rest = _split_index(idx, dims, lead)
    return f"{first} ({rest})" if rest else first


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        out.append(flat % s)
        flat //= s
    return tuple(reversed(out))


def _first_true(mask: torch.Tensor) -> tuple[int, ...]:
    return _unravel(int(mask.reshape(-1).to(torch.uint8).argmax()), mask.shape)


def _norm_dim(dim: int, ndim: int, name: str) -> int:
    if not -ndim <= dim < ndim:
        raise CheckError(f"{name} has {ndim} dims, so it has no dim {dim}")
    return dim % ndim


def _join(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------
# shapes


def check_shape(
    x: Any,
    expected: Sequence[int | str | None],
    name: str = "output",
    *,
    dims: Sequence[str] | None = None,
) -> dict[str, int]:
    """Check that ``x`` is a tensor of shape ``expected``.

    Entries of ``expected`` are ints (exact), ``None`` or ``-1`` (any size), or strings
    (named sizes: any size, but equal names must have equal sizes). Returns the named
    sizes, e.g. ``check_shape(q, ("B", "T", "C"))`` -> ``{"B": 2, "T": 5, "C": 16}``.
    ``dims`` names the dims in the message (defaults to the string entries).
    """
    t = _as_tensor(x, name)
    got = _shape(t)
    expected = tuple(expected)
    if dims is None and expected and all(isinstance(e, str) for e in expected):
        dims = expected  # type: ignore[assignment]
    want_s = _fmt_shape(expected)
    if len(got) != len(expected):
        msg = f"{name} has {len(got)} dims, shape {_fmt_shape(got)}, but expected {len(expected)} dims {want_s}"
        hint = None
        if len(got) == len(expected) - 1:
            hint = "a dim is missing: did you drop the batch or head dim (squeeze / indexing / sum)?"
        elif len(got) == len(expected) + 1:
            hint = "there is an extra dim: forgot to squeeze, or to merge heads back (B, nh, T, hs) -> (B, T, C)?"
        raise CheckError(_join(msg, hint))
    bound: dict[str, int] = {}
    for d, (g, e) in enumerate(zip(got, expected)):
        if e is None or (isinstance(e, int) and e == -1):
            continue
        if isinstance(e, str):
            if e in bound and bound[e] != g:
                first = expected.index(e)
                raise CheckError(
                    f"{name} has shape {_fmt_shape(got)} but expected {want_s}: "
                    f"dims {first} and {d} are both '{e}' but have sizes {bound[e]} and {g}"
                )
            bound[e] = g
            continue
        if int(e) != g:
            bad = [
                i
                for i, (gg, ee) in enumerate(zip(got, expected))
                if isinstance(ee, int) and not isinstance(ee, bool) and ee not in (-1, gg)
            ]
            where = ", ".join(_dim_label(i, dims) for i in bad)
            msg = (
                f"{name} has shape {_fmt_shape(got)} but expected {want_s}: "
                f"{where} differ{'s' if len(bad) == 1 else ''}"
            )
            concrete = [ee for ee in expected if isinstance(ee, int) and ee != -1]
            hint = None
            if len(concrete) == len(got) and sorted(got) == sorted(concrete):
                hint = "the sizes are right but in the wrong order: missing or extra transpose/permute?"
            elif len(concrete) == len(got) and math.prod(got) == math.prod(concrete):
                hint = "the number of elements is right: wrong view/reshape (or reshape without transposing first)?"
            raise CheckError(_join(msg, hint))
    return bound


# ----------------------------------------------------------------------------
# values


def rel_error(x: Any, y: Any) -> float:
    """Max relative error ``max |x - y| / max(1e-8, |x| + |y|)`` (CS231n style)."""
    a = torch.as_tensor(_as_tensor(x, "x") if isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    b = torch.as_tensor(_as_tensor(y, "y") if isinstance(y, torch.Tensor) else y, dtype=torch.float64)
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    err = (a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)
    return float(err.max())


def _bad_lead_dims(bad: torch.Tensor) -> list[int]:
    """Dims along which the mismatch is localised (only some indices are wrong)."""
    lead = []
    for d in range(bad.dim()):
        if bad.shape[d] <= 1:
            continue
        other = [i for i in range(bad.dim()) if i != d]
        per_index = bad.any(dim=other) if other else bad
        if not bool(per_index.all()):
            lead.append(d)
    return lead


def _only_these(bad: torch.Tensor, dims: Sequence[str] | None) -> str | None:
    """'all mismatches are in head 2; the rest matches' when they share one index along a dim."""
    if dims is None or len(dims) != bad.dim():
        return None
    parts = []
    for d in range(bad.dim()):
        if bad.shape[d] <= 1:
            continue
        other = [i for i in range(bad.dim()) if i != d]
        per_index = bad.any(dim=other) if other else bad
        idx = per_index.nonzero().reshape(-1).tolist()
        if len(idx) == 1:
            parts.append(f"{dims[d]} {idx[0]}")
    if not parts:
        return None
    return "all mismatches are in " + " and ".join(parts) + "; everything else matches"


def _factor_hint(a: torch.Tensor, e: torch.Tensor, atol: float, rtol: float) -> str | None:
    m = e.abs() > max(atol, 1e-6 * float(e.abs().max()))
    if int(m.sum()) == 0:
        return None
    f = float((a[m] / e[m]).median())
    if not math.isfinite(f) or f == 0.0 or abs(f - 1.0) < 1e-3:
        return None
    if not torch.allclose(a, f * e, rtol=max(10 * rtol, 1e-4), atol=10 * atol):
        return None
    if abs(f + 1.0) < 1e-3:
        return "values have the opposite sign: a flipped sign somewhere?"
    what = ""
    for g, fmt in ((f, "sqrt({k})"), (1.0 / f, "1/sqrt({k})")):
        k = round(g * g)
        if k >= 2 and abs(g * g - k) < 1e-3 * k and g > 0:
            what = " (= " + fmt.format(k=k) + "?)"
            if math.isqrt(k) ** 2 == k:
                what = f" (= {math.isqrt(k)} = sqrt({k})?)" if fmt.startswith("s") else f" (= 1/{math.isqrt(k)} = 1/sqrt({k})?)"
            return (
                f"values differ by a constant factor {f:.3g}{what}: did you scale by sqrt(d_k)? "
                "(divide the scores by sqrt(d_k), once — not by d_k, not twice, not multiply)"
            )
    return f"values differ by a constant factor {f:.3g}: a missing or extra scale factor?"


def _near(x: torch.Tensor, value: float, atol: float) -> bool:
    return bool(((x - value).abs() <= atol).all())


def _rows_hint(a: torch.Tensor, e: torch.Tensor, name: str) -> str | None:
    if a.dim() < 2 or bool((e < -1e-6).any()):
        return None
    if not _near(e.sum(-1), 1.0, 1e-3) or _near(a.sum(-1), 1.0, 1e-3):
        return None
    for d in range(a.dim() - 1):
        if a.shape[d] > 1 and _near(a.sum(d), 1.0, 1e-3):
            return (
                f"expected rows sum to 1 over the last dim, but these sum to 1 over dim {d}: "
                f"softmax over the wrong dim? (use dim=-1, over the keys)"
            )
    return f"expected rows sum to 1 over the last dim but {name}'s do not: missing softmax / normalisation?"


def _value_hints(a: torch.Tensor, e: torch.Tensor, atol: float, rtol: float, name: str) -> list[str]:
    hints: list[str] = []
    if a.numel() == 0 or a.numel() > _HINT_MAX_NUMEL or not bool(torch.isfinite(e).all()):
        return hints
    tol = dict(rtol=max(10 * rtol, 1e-4), atol=10 * atol)
    if bool((a == 0).all()) and not bool((e == 0).all()):
        hints.append(f"{name} is all zeros: did you return a placeholder (e.g. torch.zeros_like) or forget to fill it?")
        return hints
    if a.dim() >= 2 and a.shape[-1] == a.shape[-2] and torch.allclose(a, e.transpose(-1, -2), **tol):
        hints.append(
            f"{name} equals the expected values transposed over the last two dims: "
            "swapped query/key (K Q^T instead of Q K^T), or a missing .transpose(-2, -1)?"
        )
        return hints
    f = _factor_hint(a, e, atol, rtol)
    if f:
        hints.append(f)
        return hints
    d = a - e
    c = float(d.median())
    if abs(c) > atol and torch.allclose(a, e + c, **tol):
        hints.append(f"values differ by a constant offset {c:.3g}: an extra bias or a missing subtraction?")
        return hints
    r = _rows_hint(a, e, name)
    if r:
        hints.append(r)
        return hints
    scale = float(e.abs().max()) or 1.0
    if torch.allclose(a.double(), e.double(), rtol=1e-2, atol=1e-3 * scale):
        hints.append(f"{name} is within 1% of the expected values but not within the tolerance: computed in lower "
                     "precision (float16/bfloat16, autocast, a .half() somewhere) or with an approximation?")
        return hints
    if torch.allclose(a.reshape(-1).sort().values, e.reshape(-1).sort().values, **tol):
        hints.append(
            f"{name} has the right values in the wrong places: check the order of dims in your "
            "view/reshape/transpose/permute: a view cannot swap dims (e.g. split heads with "
            "x.view(B, T, nh, hs).transpose(1, 2), not x.view(B, nh, T, hs))"
        )
    return hints


_FLOAT_KINDS = {"bool": "bool", "int": "integer", "float": "floating point"}


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "complex"
    return "int"


def check_close(
    actual: Any,
    expected: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    name: str = "output",
    dims: Sequence[str] | None = None,
    hint: str | None = None,
    likely: Mapping[str, Any] | None = None,
) -> None:
    """Check that ``actual`` is a tensor equal to ``expected`` up to ``atol + rtol * |expected|``.

    ``likely`` maps a named mistake to what that mistake would return, e.g.
    ``{"attention without the 1/sqrt(d_k) scale": softmax(q @ k.T) @ v}``: when ``actual``
    matches one of them (same shape, within the tolerance), the message starts by naming it.

    Checks, in order: type, shape, dtype kind (float vs int vs bool), NaN/inf in
    ``actual``, values. ``dims`` names the dims for the message, e.g.
    ``("batch", "head", "query", "key")`` for attention weights ``Tensor[B, nh, Tq, Tk]``.
    On a mismatch the message gives the worst element, the max abs error, how many
    elements differ, and hints (constant factor such as sqrt(d_k), transposed,
    softmax over the wrong dim, scrambled reshape) plus the caller's ``hint``.
    """
    if dims is not None:
        dims = tuple(dims)
    a = _as_tensor(actual, name)
    e = (
        _as_tensor(expected, f"expected {name}")
        if isinstance(expected, torch.Tensor)
        else torch.as_tensor(expected, dtype=torch.float64)
    )
    if _shape(a) != _shape(e):
        shape_hint = None
        if a.dim() >= 2 and _shape(a.transpose(-1, -2)) == _shape(e):
            shape_hint = f"its last two dims are swapped: missing or extra .transpose(-2, -1)?"
            if torch.allclose(a.transpose(-1, -2), e, rtol=max(10 * rtol, 1e-4), atol=10 * atol):
                shape_hint = "it equals the expected values transposed over the last two dims: transpose it back"
        try:
            check_shape(a, _shape(e), name=name, dims=dims)
        except CheckError as err:
            raise CheckError(_join(str(err), shape_hint, hint)) from None
    if isinstance(expected, torch.Tensor):
        ka, ke = _kind(_dtype_of(actual)), _kind(_dtype_of(expected))
        if ka != ke:
            why = ""
            if ke == "float" and ka in ("int", "bool"):
                why = ": integer arithmetic, argmax, or a tensor created from ints (torch.tensor([1, 2]))?"
            raise CheckError(
                _join(f"{name} has dtype {_dtype_of(actual)} but expected a {_FLOAT_KINDS.get(ke, ke)} "
                      f"dtype like {_dtype_of(expected)}{why}", hint)
            )
    if a.numel() == 0:
        return
    if likely and not _matches(a, e, atol, rtol):
        for label, alt in likely.items():
            if _matches(a, alt, atol, rtol):
                raise CheckError(_join(f"{name} looks like {label}", _first_difference(a, e, dims, atol, rtol), hint))
    nonfinite = ~torch.isfinite(a) & torch.isfinite(e)
    if bool(nonfinite.any()):
        n_nan = int((torch.isnan(a) & nonfinite).sum())
        n_inf = int(nonfinite.sum()) - n_nan
        idx = _first_true(nonfinite)
        what = " and ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "") if s)
        raise CheckError(
            _join(
                f"{name} contains {what} value{'s' if int(nonfinite.sum()) > 1 else ''} "
                f"(first at {_fmt_index(idx, dims)}) where finite values were expected",
                "NaN usually comes from a softmax over a row where every key is masked (all -inf), "
                "from 0/0 or log(0); inf from overflow (exp of large scores).",
                hint,
            )
        )
    diff = (a - e).abs()
    tol = atol + rtol * e.abs()
    ok = (diff <= tol) | (a == e) | (torch.isnan(a) & torch.isnan(e))
    bad = ~ok
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    score = torch.where(bad, torch.nan_to_num(diff, nan=math.inf, posinf=math.inf), torch.full_like(diff, -1.0))
    idx = _unravel(int(score.reshape(-1).argmax()), a.shape)
    finite = torch.where(bad, torch.nan_to_num(diff, nan=0.0, posinf=0.0), torch.zeros_like(diff))
    max_err = float(finite.max())
    lead = _bad_lead_dims(bad) if dims is not None else []
    first, rest = _split_index(idx, dims, lead)
    if dims is not None and len(dims) == a.dim():
        head = f"{name}: {first} differs" + (f" ({rest})" if rest else "")
    else:
        head = f"{name} differs at {first}"
    msg = (
        f"{head}: got {_fmt_num(float(a[idx]))}, expected {_fmt_num(float(e[idx]))}; "
        f"max abs error {max_err:.1e} over {n_bad}/{a.numel()} elements (atol={atol:g}, rtol={rtol:g})"
    )
    extra: list[str] = []
    other_dtype = isinstance(expected, torch.Tensor) and _dtype_of(actual) != _dtype_of(expected)
    if other_dtype:  # float32 for float64 inputs: the rounding error has no pattern for the hints below
        extra.append(f"{name} is {_dtype_of(actual)} where {_dtype_of(expected)} was expected: create new tensors with "
                     f"the inputs' dtype (x.new_zeros(...), torch.zeros(..., dtype=x.dtype))")
    try:
        if dims is not None and n_bad > 1:
            only = _only_these(bad, dims)
            if only:
                extra.append(only)
        if not other_dtype:
            extra += _value_hints(a, e, atol, rtol, name)
    except Exception:  # a hint must never hide the real failure
        pass
    raise CheckError(_join(msg, *extra, hint))


def _matches(a: torch.Tensor, alt: Any, atol: float, rtol: float) -> bool:
    if not isinstance(alt, torch.Tensor) or _shape(alt) != _shape(a) or _kind(_dtype_of(alt)) != _kind(_dtype_of(a)):
        return False
    x, y = a.detach().double(), alt.detach().double()
    return bool(torch.allclose(x, y, atol=atol, rtol=rtol, equal_nan=True))


def _first_difference(a: torch.Tensor, e: torch.Tensor, dims: Sequence[str] | None, atol: float, rtol: float) -> str:
    """"(first difference at ...: got x, expected y)" for a message that already named the mistake."""
    x, y = a.detach().double(), e.detach().double()
    bad = ~((x - y).abs() <= atol + rtol * y.abs()) & ~(torch.isnan(x) & torch.isnan(y))
    if not bool(bad.any()):
        return ""
    idx = _first_true(bad)
    return f"(first difference at {_fmt_index(idx, dims)}: got {_fmt_num(float(x[idx]))}, " \
           f"expected {_fmt_num(float(y[idx]))})"


def check_rows_sum_to_one(
    weights: Any,
    dim: int = -1,
    name: str = "attention weights",
    *,
    atol: float = 1e-4,
    dims: Sequence[str] | None = None,
) -> None:
    """Check that ``weights`` are non-negative and sum to 1 along ``dim`` (a softmax output)."""
    w = _as_tensor(weights, name)
    if w.dim() == 0:
        raise CheckError(f"{name} is a scalar; expected a tensor of weights with at least one dim")
    d = _norm_dim(dim, w.dim(), name)
    if w.numel() == 0:
        return
    if not bool(torch.isfinite(w).all()):
        idx = _first_true(~torch.isfinite(w))
        raise CheckError(
            f"{name} contains NaN/inf (first at {_fmt_index(idx, dims)}): a softmax over a fully "
            "masked row (all -inf), or exp overflow?"
        )
    if bool((w < -atol).any()):
        idx = _first_true(w < -atol)
        raise CheckError(
            f"{name} has a negative value {_fmt_num(float(w[idx]))} at {_fmt_index(idx, dims)}: "
            "weights from a softmax are >= 0 — did you return the scores instead of softmax(scores)?"
        )
    s = w.sum(d)
    off = (s - 1).abs() > atol
    if not bool(off.any()):
        return
    row = list(_first_true(off))
    row.insert(d, 0)
    row_dims = None if dims is None else [n for i, n in enumerate(dims) if i != d]
    where = _fmt_index(_first_true(off), row_dims)
    msg = (
        f"{name} do not sum to 1 over {_dim_label(d, dims)}: the row at {where} sums to "
        f"{_fmt_num(float(s[_first_true(off)]))} ({int(off.sum())}/{off.numel()} rows are off)"
    )
    hint = None
    for other in range(w.dim()):
        if other != d and w.shape[other] > 1 and bool(((w.sum(other) - 1).abs() <= atol).all()):
            hint = f"they sum to 1 over {_dim_label(other, dims)} instead: softmax over the wrong dim?"
            break
    if hint is None and bool((s.abs() <= atol).any()):
        hint = "some rows are all zero: masked the weights after the softmax instead of the scores before it?"
    raise CheckError(_join(msg, hint))


def check_zero_where(
    weights: Any,
    mask: Any,
    name: str = "attention weights",
    what: str = "padding",
    *,
    atol: float = 1e-6,
    dims: Sequence[str] | None = None,
) -> None:
    """Check that ``weights`` are ~0 wherever ``mask`` is True (``mask`` broadcasts to ``weights``)."""
    w = _as_tensor(weights, name)
    m = _as_tensor(mask, f"{what} mask") != 0
    try:
        m = torch.broadcast_to(m, w.shape)
    except RuntimeError:
        raise CheckError(
            f"{what} mask of shape {_fmt_shape(_shape(m))} does not broadcast to {name} of shape "
            f"{_fmt_shape(_shape(w))}"
        ) from None
    bad = m & ~(w.abs() <= atol)  # NaN counts as bad
    if not bool(bad.any()):
        return
    idx = _first_true(bad)
    msg = (
        f"{name} should be 0 on {what} but {name} at {_fmt_index(idx, dims)} is "
        f"{_fmt_num(float(w[idx]))} ({int(bad.sum())} such elements)"
    )
    keep = ~m
    hint = "mask the scores before the softmax (masked_fill with -inf), not the weights after it"
    if bool(keep.any()) and bool((w[keep].abs() <= atol).all()):
        hint = f"{name} are zero where attending is allowed and nonzero on {what}: is the mask inverted?"
    raise CheckError(_join(msg, hint))


# ----------------------------------------------------------------------------
# properties of functions


def _first_output(y: Any, name: str) -> torch.Tensor:
    if type(y) in (tuple, list) and len(y) > 0 and issubclass(type(y[0]), torch.Tensor):
        y = y[0]
    return _as_tensor(y, name)


def _call(fn: Callable[..., Any], x: torch.Tensor, name: str) -> torch.Tensor:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = fn(x.clone())
    except CheckError:
        raise
    except Exception as e:
        raise CheckError(f"calling {name} raised {_typename(e)}: {e}") from None
    return _first_output(y, f"the output of {name}")


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or _typename(fn)


def _check_deterministic(fn: Callable[..., Any], x: torch.Tensor, name: str, atol: float, rtol: float) -> torch.Tensor:
    y1 = _call(fn, x, name)
    y2 = _call(fn, x, name)
    if _shape(y1) != _shape(y2) or not torch.allclose(y1, y2, atol=atol, rtol=rtol, equal_nan=True):
        raise CheckError(
            f"{name} gives different outputs for the same input: call .eval() (dropout) "
            "or seed it before checking this property"
        )
    return y1


def check_permutation_equivariance(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    dim: int = 1,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    name: str | None = None,
) -> None:
    """Check ``fn(x[perm]) == fn(x)[perm]`` for a random permutation of the tokens along ``dim``.

    ``x`` is e.g. ``Tensor[B, T, C]`` with ``dim=1``; ``fn`` may return a tuple, whose
    first element is checked. Self-attention without masks or positions is equivariant;
    positional encodings, causal masks and position-dependent indexing break it.
    """
    name = name or _fn_name(fn)
    xs = x.detach()
    d = _norm_dim(dim, x.dim(), "x")
    T = x.shape[d]
    if T < 2:
        raise CheckError(f"x needs at least 2 tokens along dim {d} to check permutation equivariance")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(T, generator=g)
    if bool((perm == torch.arange(T)).all()):
        perm = torch.roll(perm, 1)
    y = _check_deterministic(fn, xs, name, atol, rtol)
    if y.dim() <= d or y.shape[d] != T:
        raise CheckError(
            f"{name} output has shape {_fmt_shape(_shape(y))}: expected {T} tokens along dim {d} like the input"
        )
    yp = _call(fn, xs.index_select(d, perm.to(xs.device)), name)
    want = y.index_select(d, perm)
    if _shape(yp) != _shape(want):
        raise CheckError(f"{name} output shape changed from {_fmt_shape(_shape(want))} to {_fmt_shape(_shape(yp))} after permuting the tokens")
    bad = ~((yp - want).abs() <= atol + rtol * want.abs())
    if not bool(bad.any()):
        return
    other = [i for i in range(bad.dim()) if i != d]
    per_pos = bad.any(dim=other) if other else bad
    p = int(per_pos.to(torch.uint8).argmax())
    err = float(torch.nan_to_num((yp - want).abs(), nan=math.inf).max())
    raise CheckError(
        _join(
            f"{name} is not permutation-equivariant along dim {d}: after permuting the input tokens, "
            f"output position {p} (input token {int(perm[p])} moved there) does not equal the original "
            f"output at position {int(perm[p])}; max abs error {err:.1e}, {int(per_pos.sum())}/{T} positions differ",
            "self-attention without positions or masks treats tokens as a set; position-dependent code "
            "(positional encodings, a causal mask, mixing along the token dim in the wrong place) breaks this",
        )
    )


def _perturb(x: torch.Tensor, d: int, j: int, g: torch.Generator) -> torch.Tensor:
    """A copy of ``x`` with position ``j`` along dim ``d`` changed."""
    x2 = x.clone()
    sl = x2.select(d, j)
    if x.dtype.is_floating_point:
        sl.add_(torch.randn(sl.shape, generator=g, dtype=torch.float64).to(x.dtype).to(x.device) + 1.0)
    elif x.dtype == torch.bool:
        sl.logical_not_()
    else:
        hi = int(x.max()) + 1
        sl.copy_((sl + 1) % max(hi, 2))
    return x2


def check_causal(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    dim: int = 1,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    name: str | None = None,
) -> None:
    """Check that the output at position t depends only on inputs at positions <= t.

    Changes one future position j at a time (for every j) and checks that outputs at
    positions < j stay put. ``x`` is e.g. ``Tensor[B, T, C]`` (or token ids ``LongTensor[B, T]``)
    with the positions along ``dim``. The message names the earliest position that sees
    the future and which future position leaks into it.
    """
    name = name or _fn_name(fn)
    d = _norm_dim(dim, x.dim(), "x")
    T = x.shape[d]
    xs = x.detach()
    y = _check_deterministic(fn, xs, name, atol, rtol)
    if y.dim() <= d or y.shape[d] != T:
        raise CheckError(f"{name} output has shape {_fmt_shape(_shape(y))}: expected {T} positions along dim {d} like the input")
    g = torch.Generator().manual_seed(seed)
    leaks: list[tuple[int, int, float]] = []  # (earliest output position, leaking position, error)
    for j in range(1, T):
        y2 = _call(fn, _perturb(xs, d, j, g), name)
        if _shape(y2) != _shape(y):
            raise CheckError(f"{name} output shape changed after changing the input at position {j}")
        past_new = y2.narrow(d, 0, j)
        past_old = y.narrow(d, 0, j)
        bad = ~((past_new - past_old).abs() <= atol + rtol * past_old.abs())
        if bool(bad.any()):
            other = [i for i in range(bad.dim()) if i != d]
            per_pos = bad.any(dim=other) if other else bad
            t = int(per_pos.to(torch.uint8).argmax())
            err = float(torch.nan_to_num((past_new - past_old).abs(), nan=math.inf).max())
            leaks.append((t, j, err))
    if not leaks:
        return
    t, j, err = min(leaks)
    sees = sorted({jj for tt, jj, _ in leaks if tt == t})
    raise CheckError(
        _join(
            f"{name} is not causal along dim {d}: the output at position {t} changes when the input at "
            f"future position {j} changes (max abs change {err:.1e}); position {t} sees future "
            f"position{'s' if len(sees) > 1 else ''} {', '.join(map(str, sees[:8]))}{' ...' if len(sees) > 8 else ''}",
            "mask the scores with a lower-triangular mask (query t may attend to keys <= t) before the "
            "softmax; check the mask is not transposed (torch.tril, not torch.triu, for 'may attend')",
        )
    )


# ----------------------------------------------------------------------------
# no delegation to the reference implementation

_DYNAMIC_NAMES = {"eval", "exec", "compile", "__import__", "globals", "__builtins__"}
_DYNAMIC_ATTRS = {"import_module", "__import__", "__builtins__"}  # not .eval(): that is nn.Module.eval


def _dotted(node: ast.AST) -> tuple[str, list[str]] | None:
    """``torch.nn.functional.softmax`` -> ('torch', ['nn', 'functional', 'softmax'])."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, list(reversed(attrs))
    if attrs:
        return "", list(reversed(attrs))
    return None


def _resolve_module_name(obj: Any) -> str | None:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        obj = type(obj)  # a global instance, e.g. attn = nn.MultiheadAttention(...)
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str):
        return f"{mod}.{qual}"
    return None


def _match(dotted: str, forbidden: Mapping[str, str], bare_ok: bool, allowed: Collection[str] = ()) -> str | None:
    if any(dotted == a or dotted.startswith(a + ".") for a in allowed):
        return None
    parts = dotted.split(".")
    for key in forbidden:
        if "." in key:
            if dotted == key or dotted.startswith(key + ".") or dotted.endswith("." + key) or f".{key}." in dotted:
                return key
        elif key in (parts if bare_ok else parts[1:]):
            return key
    return None


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:  # bare string statements are comments, not code
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                    ids.add(id(stmt.value))
    return ids


def _methods_of(cls: type) -> list[Any]:
    out = []
    for v in vars(cls).values():
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        elif isinstance(v, property):
            out += [f for f in (v.fget, v.fset, v.fdel) if inspect.isfunction(f)]
            continue
        if inspect.isfunction(v):
            out.append(v)
    return out


def _source_of(obj: Any) -> tuple[str, int, str]:
    if isinstance(obj, str):
        return obj, 1, "the code"
    label = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or _typename(obj)
    target = inspect.unwrap(obj) if inspect.isroutine(obj) else obj
    try:
        lines, start = inspect.getsourcelines(target)
    except (OSError, TypeError) as e:
        raise CheckError(f"could not read the source of {label} ({e}): define it in a notebook cell or a .py file") from None
    return "".join(lines), max(start, 1), label


def _globals_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, str):
        return {}
    if inspect.isclass(obj):
        mod = inspect.getmodule(obj)
        return dict(vars(mod)) if mod is not None else {}
    if inspect.ismodule(obj):
        return dict(vars(obj))
    return dict(getattr(inspect.unwrap(obj), "__globals__", {}))


def _user_defined(value: Any, home: str | None) -> bool:
    mod = getattr(value, "__module__", None)
    return (inspect.isfunction(value) or inspect.isclass(value)) and mod is not None and mod == home


def check_no_delegation(
    obj_or_source: Any,
    forbidden: Mapping[str, str],
    *,
    forbid_dynamic: bool | Collection[str] = True,
    follow: bool = True,
    allowed: Collection[str] = (),
) -> None:
    """Fail if the code of ``obj_or_source`` uses any name in ``forbidden``.

    ``forbidden`` maps a name to the advice shown, e.g.
    ``{"scaled_dot_product_attention": "implement softmax(QK^T/sqrt(d_k))V yourself",
    "MultiheadAttention": "...", "course.nn": "..."}``. A plain name matches attribute
    access (``F.scaled_dot_product_attention``), imports and global names; a dotted name
    (``course.nn``) matches module paths, also through aliases (``import course.nn as cnn``).
    String literals are concatenated to catch ``getattr(F, "scaled_" + "dot_product_attention")``;
    with ``forbid_dynamic``, ``eval``/``exec``/``globals``/``__import__``/``importlib`` are refused too
    (or, given a collection of names, only those: builtins such as ``"__import__"``, ``"importlib"`` for its import,
    ``"import_module"`` for the attribute).
    With ``follow``, user-defined functions and classes that the code calls (from the same
    module / notebook) are checked as well; the object's own methods and the student's
    own functions that happen to share a forbidden name are allowed. ``allowed`` names dotted paths under a
    forbidden one that may be used (``course.swin.load_torchvision_weights``, an adapter that answers nothing);
    a plain ``import`` of a module that holds allowed names is then allowed too, each use of the module being
    checked on its own. The text of ``print(...)`` and of f-strings is prose, not a name looked up.
    """
    seen: set[int] = set()
    hits: list[str] = []
    _scan(obj_or_source, forbidden, forbid_dynamic, follow, seen, hits, tuple(allowed))
    if hits:
        shown = hits[:6] + ([f"... and {len(hits) - 6} more"] if len(hits) > 6 else [])
        raise CheckError("\n".join(shown))


def _scan(
    obj: Any,
    forbidden: Mapping[str, str],
    forbid_dynamic: bool | Collection[str],
    follow: bool,
    seen: set[int],
    hits: list[str],
    allowed: tuple[str, ...] = (),
) -> None:
    if not isinstance(obj, str) and not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        obj = type(obj)  # an instance: check its class
    if id(obj) in seen:
        return
    seen.add(id(obj))
    try:
        src, start, label = _source_of(obj)
    except CheckError:
        # Python < 3.13 cannot find the source of a class defined in a notebook cell;
        # its methods (whose code objects point at the cell) still have one.
        methods = _methods_of(obj) if inspect.isclass(obj) else []
        if not methods:
            raise
        for m in methods:
            _scan(m, forbidden, forbid_dynamic, follow, seen, hits, allowed)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in student strings
        try:
            tree = ast.parse(textwrap.dedent(src))
        except SyntaxError as e:
            raise CheckError(f"could not parse the source of {label}: {e}") from None
    glb = _globals_of(obj)
    home = None if isinstance(obj, str) else getattr(obj, "__module__", None)
    defined = {
        n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    } | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
        a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs + n.posonlyargs
    }
    docs = _docstring_nodes(tree)
    dynamic_names = _DYNAMIC_NAMES if forbid_dynamic is True else set(forbid_dynamic or ())
    dynamic_attrs = _DYNAMIC_ATTRS if forbid_dynamic is True else _DYNAMIC_ATTRS & dynamic_names
    no_importlib = forbid_dynamic is True or "importlib" in dynamic_names
    follow_next: list[Any] = []
    hit_keys: set[str] = set()

    def hit(node: ast.AST, what: str, key: str) -> None:
        line = start + getattr(node, "lineno", 1) - 1
        also = "" if key in what else f", which is {key}"
        msg = f"{label} must not use `{what}` (line {line}{also}): {forbidden[key]}"
        hit_keys.add(key)
        if msg not in hits:
            hits.append(msg)

    strings: list[tuple[int, int, str]] = []
    prose = {id(c) for n in ast.walk(tree)
             if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print")
             or isinstance(n, ast.JoinedStr)
             for c in ast.walk(n) if isinstance(c, ast.Constant) and c is not n}
    holders = {a.rsplit(".", 1)[0] for a in allowed}  # modules some of whose names are allowed
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}  # a.b of a.b.c: c's chain decides
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            base = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                plain = isinstance(node, ast.Import) and alias.asname is None and full in holders
                key = None if plain else _match(full, forbidden, bare_ok=True, allowed=allowed)
                if key:
                    hit(node, f"from {base} import {alias.name}" if base else f"import {full}", key)
                elif no_importlib and alias.name == "importlib":
                    hits.append(f"{label} must not import importlib (line {start + node.lineno - 1}): dynamic imports are not allowed here")
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in inner:
            dn = _dotted(node)
            if dn is None or dn[0] in ("self", "cls"):
                continue
            base, attrs = dn
            resolved = base
            if base in glb and base not in defined:
                resolved = _resolve_module_name(glb[base]) or base
            dotted = ".".join([resolved, *attrs]) if resolved else ".".join(attrs)
            key = _match(dotted, forbidden, bare_ok=False, allowed=allowed) or \
                _match(".".join([base, *attrs]), forbidden, bare_ok=False, allowed=allowed)
            if key:
                hit(node, ".".join([base, *attrs]), key)
            elif attrs and attrs[-1] in dynamic_attrs:
                hits.append(f"{label} must not use `{'.'.join([base, *attrs])}` (line {start + node.lineno - 1}): dynamic code is not allowed here")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if forbid_dynamic and node.id in dynamic_names and node.id not in defined:
                hits.append(f"{label} must not use `{node.id}` (line {start + node.lineno - 1}): dynamic code is not allowed here")
                continue
            if node.id in defined:
                continue
            value = glb.get(node.id, None)
            dotted_keys = {k: v for k, v in forbidden.items() if "." in k}
            if node.id in glb and _user_defined(value, home) and not _match(_resolve_module_name(value) or "", dotted_keys, bare_ok=False):
                if follow:
                    follow_next.append(value)
                continue
            candidates = [node.id]
            if node.id in glb:
                r = _resolve_module_name(value)
                if r:
                    candidates.append(r)
            for c in candidates:
                key = _match(c, forbidden, bare_ok=True, allowed=allowed)
                if key:
                    hit(node, node.id, key)
                    break
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs | prose:
            strings.append((node.lineno, node.col_offset, node.value))
    joined = "".join(v for _, _, v in sorted(strings))  # catches getattr(F, "scaled_" + "dot_product_attention")
    for a in allowed:  # "course.swin.load_torchvision_weights" names an adapter, not the module's answers
        joined = joined.replace(a, "")
    for key in forbidden:
        if key in joined and key not in hit_keys:
            hits.append(f"{label} spells out the forbidden name '{key}' in a string: {forbidden[key]}")
    for value in follow_next:
        try:
            _scan(value, forbidden, forbid_dynamic, follow, seen, hits, allowed)
        except CheckError:
            pass  # helpers whose source is unavailable are not the student's


# ----------------------------------------------------------------------------
# reproducibility and reporting


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Seed ``torch``, ``random`` and ``numpy`` inside the block and restore the RNG states after."""
    py_state = random.getstate()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None  # type: ignore[assignment]
    np_state = np.random.get_state() if np is not None else None
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        if np is not None:
            np.random.seed(seed % 2**32)
        yield
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if np is not None and np_state is not None:
            np.random.set_state(np_state)


def passed(msg: str, n_checks: int | None = None) -> None:
    """Print a success line to stdout, e.g. ``✔ scaled_dot_product_attention: 4 checks passed``."""
    line = msg if n_checks is None else f"{msg}: {n_checks} check{'s' if n_checks != 1 else ''} passed"
    try:
        print(f"\u2714 {line}", flush=True)
    except UnicodeEncodeError:  # a console without UTF-8
        print(f"OK {line}", flush=True)


# ----------------------------------------------------------------------------
# planted models and helpers that visible and hidden checks share


def randomize_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Random LayerNorm weights in [0.5, 1.5] and biases N(0, 0.1) (the defaults 1 and 0 would hide
    a swapped or missing norm); returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return module


class CountingModel(torch.nn.Module):
    """A planted encoder-decoder for greedy decoding: in eval mode the next token is
    ``(last token + src[b, 1]) % V``, so EOS comes at a known step; in training mode (dropout on)
    it is ``(last token + src[b, 1] + 1) % V``. Counts its ``encode`` and ``decode`` calls."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.V = vocab_size
        self.n_encode = 0
        self.n_decode = 0

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        self.n_encode += 1
        return src[:, 1:2].float()[:, :, None]  # (B, 1, 1): the step of each sentence

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        self.n_decode += 1
        step = memory[:, 0, 0].long() + int(self.training)  # (B,)
        nxt = (tgt + step[:, None]) % self.V  # (B, t)
        return torch.nn.functional.one_hot(nxt, self.V).float() + 0.01 * torch.arange(self.V)  # (B, t, V)


def greedy_one_by_one(model: torch.nn.Module, src: torch.Tensor, max_len: int, bos: int, eos: int) -> list[list[int]]:
    """Unbatched greedy decoding in eval mode, one sentence at a time: a list of token lists (BOS ... EOS)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for b in range(src.size(0)):
            memory = model.encode(src[b:b + 1])
            ys = [bos]
            for _ in range(max_len):
                logits = model.decode(torch.tensor([ys]), memory, src[b:b + 1])
                ys.append(int(logits[0, -1].argmax()))
                if ys[-1] == eos:
                    break
            out.append(ys)
    model.train(was_training)
    return out


class FixedLogits(torch.nn.Module):
    """A stand-in model that records its inputs and returns fixed random logits ``[B, T, V]``
    (the same for the same ``seed`` and shape)."""

    def __init__(self, V: int, seed: int = 0):
        super().__init__()
        self.V, self.seed, self.calls = V, seed, []

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        self.calls.append((src, tgt))
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(tgt.size(0), tgt.size(1), self.V, generator=g, dtype=torch.float64).float().requires_grad_()


class _TableStep(torch.nn.Module):
    """The decoder step of :class:`TableModel`."""

    def __init__(self, owner: "TableModel"):
        super().__init__()
        self.owner = [owner]  # a list: not registered as a submodule (no cycle)

    def forward(self, y_prev: torch.Tensor, s_prev: torch.Tensor, enc_out: torch.Tensor,
                src_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.owner[0]
        m.n_decode += 1
        m.max_rows = max(m.max_rows, int(y_prev.size(0)))
        first, before = s_prev[:, 0].long() % m.table.size(0), s_prev[:, 1].long()  # (B,) each: the state
        table = m.table.to(y_prev.device)
        shift = int(m.training)  # training mode (dropout on) reads every row one off: row y + 1 for token y
        logits = table[first, (y_prev + shift) % m.V]  # (B, V)
        if m.memory:  # the token before y_prev, carried in the state (none yet: -1)
            row = table[first, (before.clamp(min=0) + shift) % m.V]
            logits = logits + m.memory * torch.where((before >= 0)[:, None], row, 0.0)
        lengths = src_mask.long().sum(-1).clamp(min=1)  # (B,)
        pos = y_prev % lengths  # attends to one real source position, chosen by the previous token
        weights = torch.nn.functional.one_hot(pos, src_mask.size(1)).float()  # (B, S)
        return logits, torch.stack([s_prev[:, 0], y_prev.to(s_prev.dtype)], dim=1), weights


class TableModel(torch.nn.Module):
    """A planted encoder-decoder for greedy and beam search (the interface of ``Seq2Seq``: ``encode``,
    ``decoder``, ``pad_id``): the next-token logits are ``table[src[b, 0], y_prev]``, a fixed
    ``[n_first, V, V]`` table (when not given: random N(0, 2^2) from ``seed``, never predicting
    ``pad_id``), so the probability of every hypothesis is known exactly. In training mode it reads
    every row one off (row ``y + 1`` for token ``y``): it is then the eval-mode model of
    ``table.roll(-1, dims=1)``. Its attention weights are one-hot at source position ``y_prev % len``.
    With ``memory`` the logits add ``memory * table[src[b, 0], token before y_prev]``, that token carried
    in the state ``[B, 2]``: a decoder that does not follow each hypothesis's own state gets other
    probabilities. Counts ``n_decode`` calls and the largest batch (``max_rows``) a step saw."""

    def __init__(self, V: int, table: torch.Tensor | None = None, seed: int = 0, pad_id: int = 0,
                 n_first: int | None = None, memory: float = 0.0):
        super().__init__()
        if table is None:
            g = torch.Generator().manual_seed(seed)
            table = 2.0 * torch.randn(n_first or V, V, V, generator=g)
            table[..., pad_id] = -1e4  # the padding token is never predicted
        table = torch.as_tensor(table, dtype=torch.float32)
        if table.dim() == 2:
            table = table[None]
        if table.shape[1:] != (V, V):
            raise ValueError(f"table must be [n_first, {V}, {V}] (or [{V}, {V}]), got {tuple(table.shape)}")
        self.V, self.pad_id, self.table, self.memory = V, pad_id, table, float(memory)
        self.decoder = _TableStep(self)
        self.n_decode = 0
        self.max_rows = 0

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> enc_out ``[B, S, 2]`` (positions), s_0 ``[B, 2]`` (the first source token, -1), src_mask ``[B, S]``."""
        B, S = src.shape
        mask = torch.arange(S, device=src.device)[None, :] < src_len.to(src.device)[:, None]
        enc_out = torch.arange(S, device=src.device, dtype=torch.float32)[None, :, None].expand(B, S, 2)
        return enc_out, torch.stack([src[:, 0].float(), torch.full((B,), -1.0, device=src.device)], dim=1), mask

    def log_prob(self, first: int, tokens: list[int]) -> float:
        """Exact eval-mode ``log p(tokens[1:] | tokens[0], src[0] = first)`` (tokens starts with bos)."""
        if getattr(self, "_logp", None) is None:  # as nested lists: brute force calls this a lot
            t = self.table.double()
            self._logp = torch.log_softmax(t, dim=-1).tolist()  # [n_first][prev][V]
            self._logp2 = (torch.log_softmax(t[:, None, :, :] + self.memory * t[:, :, None, :], dim=-1).tolist()
                           if self.memory else None)  # [n_first][before][prev][V]
        one = self._logp[first % len(self._logp)]
        two = self._logp2[first % len(self._logp2)] if self._logp2 is not None else None
        return math.fsum(one[tokens[i - 1]][tokens[i]] if two is None or i == 1
                         else two[tokens[i - 2]][tokens[i - 1]][tokens[i]] for i in range(1, len(tokens)))


def table_from_probs(V: int, probs: Mapping[int, Mapping[int, Mapping[int, float]]]) -> torch.Tensor:
    """A logits table for :class:`TableModel` from ``{first: {prev: {token: p}}}``: ``[max first + 1, V, V]``,
    ``log p`` at the listed (first, prev, token), -20 (p about 2e-9) elsewhere."""
    table = torch.full((max(probs) + 1, V, V), -20.0)
    for first, rows in probs.items():
        for prev, row in rows.items():
            for token, p in row.items():
                table[first, prev, token] = math.log(p)
    return table


def best_by_brute_force(model: TableModel, first: int, max_len: int, bos: int, eos: int,
                        alpha: float = 1.0, exclude: Sequence[int] = ()) -> list[int]:
    """``[bos, y_1, ..., y_n]`` maximising ``log p / n**alpha`` over every hypothesis of a :class:`TableModel`
    (``y_n = eos`` or ``n = max_len``; tokens in ``exclude``, e.g. the padding id, never appear): what a beam
    as wide as the search space finds."""
    tokens = [t for t in range(model.V) if t not in exclude]
    best, best_score = [bos], -math.inf
    for n in range(1, max_len + 1):
        for ys in itertools.product(tokens, repeat=n):
            if eos in ys[:-1] or (n < max_len and ys[-1] != eos):
                continue
            score = model.log_prob(first, [bos, *ys]) / n ** alpha
            if score > best_score:
                best, best_score = [bos, *ys], score
    return best


def overfit(model: torch.nn.Module, src: torch.Tensor, src_len: torch.Tensor, tgt: torch.Tensor, steps: int = 40,
            lr: float = 1e-2, pad_id: int = 0) -> list[float]:
    """Train ``model`` (a ``Seq2Seq``: ``model(src, src_len, tgt)`` -> logits ``[B, T-1, V]``, ...) on one batch
    with Adam for ``steps`` steps of teacher-forcing cross-entropy against ``tgt[:, 1:]`` (``pad_id``
    ignored); the losses, one per step. Deterministic for a model without dropout: the same weights give
    the same curve."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(src, src_len, tgt)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1),
                                                 ignore_index=pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    return losses
