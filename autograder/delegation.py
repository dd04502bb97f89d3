"""Delegation detection by numerics, decided in the trusted grader process.

A guard that runs in the student's kernel (``h.forbidden``, the source scan of
``course.testing.check_no_delegation``) can be switched off from the kernel: aliases taken
in an added cell, ``torch.ops.aten`` overloads, ``torch._C.DisableTorchFunction()``,
rewriting the grading agent, code that only delegates when ``NBGRADER_EXECUTION`` is set.
What the kernel cannot fake is the float32 *bits* its code returns for inputs the grader
chooses. This module compares those bits, here, with

- the **references** a student could delegate to, computed here on the same inputs: PyTorch's
  fused CPU flash-attention kernel (what ``F.scaled_dot_product_attention`` runs for 4-D
  float32 inputs with equal head sizes), its math kernel (``torch.ops.aten.
  _scaled_dot_product_attention_math``; what it runs for other layouts), ``nn.MultiheadAttention``
  (fast path, ``need_weights`` True and False), ``F.multi_head_attention_forward``,
  ``torch._native_multi_head_attention`` and ``course.nn``'s blocks;
- a set of **honest** formulations, written the ways a student plausibly writes them
  (``q @ k^T / sqrt(d)``, ``* d ** -0.5``, the scale on ``q``, ``einsum``, ``baddbmm``,
  ``masked_fill``/``where``/additive masks, a hand-written softmax, float64 inside, fused or
  separate projections, ``nn.Linear`` or ``@``, contiguous or strided heads, ...).

:func:`check_not_reference` fails a student's output that is **bit-for-bit** the output
of a reference whose output is *not* bit-for-bit that of any honest formulation on the same
inputs. A reference that coincides with an honest formulation is *undecidable* there: a
student who matches it is not failed; the verdict says so and it is logged for the
instructor. ``course.nn`` computes exactly like an honest student, so it carries a
fingerprint (:func:`course.nn.fingerprint`: results moved one ulp toward zero) that no
plain implementation reproduces.

Inputs are chosen so that the references differ from every honest formulation: float32,
moderate values (``randn``: large values saturate the softmax into exact 0/1 weights, which
makes formulations *agree*), head sizes that are not powers of 4 (then ``1/sqrt(d)`` and
``d ** -1/4`` are inexact, and dividing, multiplying and splitting the scale all round
differently), several keys per query. References are computed on one thread, as the
grading kernel runs (measured: the results do not depend on the thread count here).

What it does not guarantee: a student who delegates and then changes the result by a
rounding error (adds noise, undoes ``course.nn``'s fingerprint, casts through float64)
returns a value no reference has; that is not detected. Nor is a route missing from the
references (e.g. another library), nor a formulation that is itself identical to a
reference's (``F.multi_head_attention_forward(need_weights=True)`` computes exactly the
honest "scale q by ``head_dim ** -0.5``" formulation: undecidable, by construction). And it
assumes the grader and the kernel run the same PyTorch build on the same kind of CPU (the
kernels are picked per CPU: ``ATEN_CPU_CAPABILITY``, MKL's code paths).

Known false positive: scaling *both* q and k by ``d ** -0.25`` before the product is,
bit for bit, PyTorch's math kernel, and is failed as such (see :data:`HONEST_ATTENTION`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import course.nn

log = logging.getLogger(__name__)

Pair = tuple[Tensor, "Tensor | None"]  # (output, attention weights or None)

# -- the decision ----------------------------------------------------------------------------------
def _bits(t: object) -> tuple | None:
    """A key equal for two tensors exactly when their dtype, shape and bytes are (NaNs included)."""
    if not isinstance(t, Tensor) or t.is_complex() or t.layout != torch.strided:
        return None
    t = t.detach().cpu().contiguous()
    raw = t.view(torch.uint8) if t.dim() and t.numel() else t.reshape(-1).view(torch.uint8)
    return str(t.dtype), tuple(t.shape), raw.numpy().tobytes()


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` have the same dtype, shape and bits (NaNs included)."""
    ka = _bits(a)
    return ka is not None and ka == _bits(b)


@dataclass(frozen=True)
class Verdict:
    """What :func:`check_not_reference` found (it raises instead when ``delegated``)."""

    what: str
    delegated: str | None  # the decidable reference the output equals bit for bit
    decidable: tuple[str, ...]  # references that differ from every honest formulation on these inputs
    undecidable: tuple[tuple[str, str], ...]  # (reference, the honest formulation with the same bits)
    matches_undecidable: tuple[str, ...]  # undecidable references the output equals (not failed)
    honest_match: str | None  # an honest formulation the output equals bit for bit, if any


def judge(got: Tensor, references: Mapping[str, Tensor], honest: Mapping[str, Tensor], *, what: str) -> Verdict:
    """The decision of :func:`check_not_reference`, without raising."""
    undecidable, decidable, matches_undecidable, delegated = [], [], [], None
    honest_by_bits: dict[tuple, str] = {}
    for hn, ht in honest.items():
        key = _bits(ht)
        if key is not None:
            honest_by_bits.setdefault(key, hn)
    mine = _bits(got)
    for name, ref in references.items():
        key = _bits(ref)
        if key is None:
            continue
        twin = honest_by_bits.get(key)
        if twin is not None:
            undecidable.append((name, twin))
            if key == mine:
                matches_undecidable.append(name)
        else:
            decidable.append(name)
            if delegated is None and key == mine:
                delegated = name
    honest_match = honest_by_bits.get(mine) if mine is not None else None
    return Verdict(what, delegated, tuple(decidable), tuple(undecidable), tuple(matches_undecidable), honest_match)


def check_not_reference(
    got: Tensor,
    references: Mapping[str, Tensor],
    honest: Mapping[str, Tensor],
    *,
    what: str,
    advice: str = "this exercise is to implement it yourself",
) -> Verdict:
    """Fail (``AssertionError``) if ``got`` is bit-for-bit one of ``references`` that is not
    bit-for-bit any of ``honest``; return the :class:`Verdict` otherwise.

    ``references`` and ``honest`` map names to results computed here on the same inputs the
    student's code got. Reference names are shown to the student (``what`` too); the inputs
    never are. An undecidable match is logged for the instructor, not failed.
    """
    v = judge(got, references, honest, what=what)
    for name, twin in v.undecidable:
        log.debug("%s: reference %s is not decidable by numerics here (same bits as honest %s)", what, name, twin)
    if v.matches_undecidable:
        names = ", ".join(dict.fromkeys(display_name(n) for n in v.matches_undecidable))
        log.warning("%s equals %s bit for bit; so does an honest formulation (%s): not decidable by numerics, "
                    "not failed", what, names, dict(v.undecidable)[v.matches_undecidable[0]])
    if v.delegated is not None:
        raise AssertionError(
            f"{what} is bit-for-bit the output of {display_name(v.delegated)}, which none of the usual ways of "
            f"writing it by hand reproduces: {advice} (do not call the reference, also not through an alias, a "
            f"subclass, torch.ops or a copy made in another cell)")
    return v


# -- small tools -------------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Compute on one thread, as the grading kernel does (``course.profile`` quick)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_num_threads(n)


def _attempt(out: dict, name: str, fn: Callable[[], object]) -> None:
    """``out[name] = fn()``, skipped (and logged) where this build of PyTorch lacks the route."""
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - a missing kernel only means one reference fewer
        log.debug("reference %s unavailable: %s: %s", name, type(e).__name__, e)
        return
    out[name] = value.detach() if isinstance(value, Tensor) else value


def additive(mask: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """A boolean mask (True = may attend) as the additive float mask it means (0 / -inf)."""
    if mask is None or mask.dtype != torch.bool:
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, float("-inf"))


def _apply_mask(s: Tensor, mask: Tensor | None, how: str = "masked_fill") -> Tensor:
    if mask is None:
        return s
    if mask.dtype != torch.bool:
        return s + mask.to(s.dtype)
    if how == "where":
        return torch.where(mask, s, torch.tensor(float("-inf"), dtype=s.dtype))
    if how == "additive":
        return s + additive(mask, s.dtype)
    return s.masked_fill(~mask, float("-inf"))


def _zero_blocked(w: Tensor, s: Tensor) -> Tensor:
    return w.masked_fill(torch.isneginf(s).all(-1, keepdim=True), 0.0)


# -- scaled dot-product attention ------------------------------------------------------------------
SDPA = "F.scaled_dot_product_attention"
SDPA_4D = "F.scaled_dot_product_attention on 4-D heads (its fused CPU kernel)"
FLASH = "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu"
MATH = "torch.ops.aten._scaled_dot_product_attention_math (the kernel F.scaled_dot_product_attention runs for " \
       "other layouts)"
MHA_FORWARD_W = "F.multi_head_attention_forward / nn.MultiheadAttention with need_weights=True"
MHA_FORWARD = "F.multi_head_attention_forward / nn.MultiheadAttention"
COURSE_SDPA = "course.nn.scaled_dot_product_attention"


def _as_heads(t: Tensor) -> Tensor:
    """``(..., T, d)`` as ``(N, 1, T, d)`` (the fused kernels want 4-D)."""
    return t.reshape(-1, 1, *t.shape[-2:])


def _mha_forward_as_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool) -> Pair:
    """Attention through ``F.multi_head_attention_forward`` with identity projections, one head."""
    d, lead = q.size(-1), q.shape[:-2]
    if v.size(-1) != d:
        raise ValueError("identity projections need d_k == d_v")
    eye, zero = torch.eye(d, dtype=q.dtype), torch.zeros(d, dtype=q.dtype)
    Tq, Tk = q.size(-2), k.size(-2)
    qq, kk, vv = (t.reshape(-1, t.size(-2), d).transpose(0, 1) for t in (q, k, v))  # (T, N, d)
    am = additive(mask)
    if am is not None:
        am = am.expand(*lead, Tq, Tk).reshape(-1, Tq, Tk)
    out, w = F.multi_head_attention_forward(
        qq, kk, vv, d, 1, None, torch.zeros(3 * d, dtype=q.dtype), None, None, False, 0.0, eye, zero,
        training=False, need_weights=need_weights, attn_mask=am, use_separate_proj_weight=True, q_proj_weight=eye,
        k_proj_weight=eye, v_proj_weight=eye, average_attn_weights=False)
    return out.transpose(0, 1).reshape(*lead, Tq, d), (None if w is None else w.reshape(*lead, Tq, Tk))


def attention_references(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> dict[str, Pair]:
    """``(out, weights)`` of every reference route for ``scaled_dot_product_attention(q, k, v, mask)``
    (weights None where the route gives none). Mask convention of the notebook."""
    R: dict[str, Pair] = {}
    am = additive(mask, q.dtype)
    with one_thread(), torch.no_grad():
        _attempt(R, SDPA, lambda: (F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None))
        _attempt(R, SDPA_4D, lambda: (F.scaled_dot_product_attention(
            _as_heads(q), _as_heads(k), _as_heads(v),
            attn_mask=None if mask is None else mask.expand(*q.shape[:-1], k.size(-2)).reshape(
                -1, 1, q.size(-2), k.size(-2))).reshape(*q.shape[:-1], v.size(-1)), None))
        _attempt(R, FLASH, lambda: (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, attn_mask=am)[0], None))
        _attempt(R, MATH, lambda: tuple(torch.ops.aten._scaled_dot_product_attention_math(q, k, v, am)))
        _attempt(R, MHA_FORWARD_W, lambda: _mha_forward_as_sdpa(q, k, v, mask, True))
        _attempt(R, MHA_FORWARD, lambda: _mha_forward_as_sdpa(q, k, v, mask, False))
        _attempt(R, COURSE_SDPA, lambda: course.nn.scaled_dot_product_attention(q, k, v, mask, need_weights=True))
    with one_thread():  # with gradients enabled the dispatcher may pick another kernel
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        _attempt(R, SDPA + " [with gradients]", lambda: (F.scaled_dot_product_attention(*leaves, attn_mask=mask), None))
    return R


def _honest_sdpa(q, k, v, mask, *, scale="div", mask_how="masked_fill", mm="matmul", softmax="torch",
                 kt_contiguous=False) -> Pair:
    d = q.size(-1)
    kt = k.transpose(-2, -1)
    if kt_contiguous:
        kt = kt.contiguous()
    if scale == "q_div":
        q = q / math.sqrt(d)
    elif scale == "q_mul":
        q = q * d ** -0.5
    if mm == "einsum":
        s = torch.einsum("...qd,...kd->...qk", q, k)
    elif mm == "bmm":
        s = torch.bmm(q.reshape(-1, *q.shape[-2:]), kt.reshape(-1, *kt.shape[-2:])).reshape(*q.shape[:-1], k.size(-2))
    else:
        s = q @ kt
    if scale == "div":
        s = s / math.sqrt(d)
    elif scale == "mul":
        s = s * d ** -0.5
    elif scale == "mul_inv":
        s = s * (1.0 / math.sqrt(d))
    s = _apply_mask(s, mask, mask_how)
    if softmax == "manual":
        e = (s - s.amax(-1, keepdim=True)).exp()
        w = e / e.sum(-1, keepdim=True)
    elif softmax == "F":
        w = F.softmax(s, dim=-1)
    else:
        w = torch.softmax(s, dim=-1)
    w = _zero_blocked(w, s)
    out = torch.einsum("...qk,...kd->...qd", w, v) if mm == "einsum" else w @ v
    return out, w


def _honest_sdpa_baddbmm(q, k, v, mask) -> Pair:
    lead, Tq, Tk = q.shape[:-2], q.size(-2), k.size(-2)
    bias = additive(mask, q.dtype)
    bias = torch.zeros(*lead, Tq, Tk, dtype=q.dtype) if bias is None else bias.expand(*lead, Tq, Tk)
    s = torch.baddbmm(bias.reshape(-1, Tq, Tk), q.reshape(-1, Tq, q.size(-1)),
                      k.reshape(-1, Tk, k.size(-1)).transpose(1, 2), alpha=1.0 / math.sqrt(q.size(-1)))
    s = s.reshape(*lead, Tq, Tk)
    w = _zero_blocked(torch.softmax(s, -1), s)
    return w @ v, w


def _honest_sdpa_float64(q, k, v, mask) -> Pair:
    m = mask if mask is None or mask.dtype == torch.bool else mask.double()
    out, w = _honest_sdpa(q.double(), k.double(), v.double(), m)
    return out.to(q.dtype), w.to(q.dtype)


HONEST_ATTENTION: dict[str, Callable[..., Pair]] = {
    "q @ k^T / sqrt(d) (the solution)": lambda q, k, v, m: _honest_sdpa(q, k, v, m),
    "q @ k^T * d ** -0.5": lambda q, k, v, m: _honest_sdpa(q, k, v, m, scale="mul"),
    "q @ k^T * (1 / sqrt(d))": lambda q, k, v, m: _honest_sdpa(q, k, v, m, scale="mul_inv"),
    "(q / sqrt(d)) @ k^T": lambda q, k, v, m: _honest_sdpa(q, k, v, m, scale="q_div"),
    "(q * d ** -0.5) @ k^T": lambda q, k, v, m: _honest_sdpa(q, k, v, m, scale="q_mul"),
    "einsum": lambda q, k, v, m: _honest_sdpa(q, k, v, m, mm="einsum"),
    "torch.bmm on flattened heads": lambda q, k, v, m: _honest_sdpa(q, k, v, m, mm="bmm"),
    "contiguous k^T": lambda q, k, v, m: _honest_sdpa(q, k, v, m, kt_contiguous=True),
    "additive float mask": lambda q, k, v, m: _honest_sdpa(q, k, v, m, mask_how="additive"),
    "torch.where mask": lambda q, k, v, m: _honest_sdpa(q, k, v, m, mask_how="where"),
    "F.softmax": lambda q, k, v, m: _honest_sdpa(q, k, v, m, softmax="F"),
    "hand-written softmax": lambda q, k, v, m: _honest_sdpa(q, k, v, m, softmax="manual"),
    "baddbmm(mask, q, k^T, alpha=1/sqrt(d))": _honest_sdpa_baddbmm,
    "float64 inside, cast back": _honest_sdpa_float64,
}
"""Plain formulations of attention. Deliberately absent: scaling *both* q and k by
``d ** -0.25`` before the product, which is exactly PyTorch's math kernel (add it here to stop
failing it, at the price of no longer recognising that kernel)."""


def attention_honest(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> dict[str, Pair]:
    """``(out, weights)`` of each formulation of :data:`HONEST_ATTENTION` on these inputs."""
    with one_thread(), torch.no_grad():
        return {name: fn(q, k, v, mask) for name, fn in HONEST_ATTENTION.items()}


def check_attention_not_delegated(out: Tensor, weights: Tensor | None, q: Tensor, k: Tensor, v: Tensor,
                                  mask: Tensor | None = None, *, what: str, advice: str) -> list[Verdict]:
    """Fail if the student's ``(out, weights)`` for these inputs are those of a reference attention."""
    refs, honest = attention_references(q, k, v, mask), attention_honest(q, k, v, mask)
    verdicts = [check_not_reference(out, {n: r[0] for n, r in refs.items()}, {n: h[0] for n, h in honest.items()},
                                    what=f"{what}: the output", advice=advice)]
    if isinstance(weights, Tensor):
        verdicts.append(check_not_reference(
            weights, {n: r[1] for n, r in refs.items() if isinstance(r[1], Tensor)},
            {n: h[1] for n, h in honest.items()}, what=f"{what}: the attention weights", advice=advice))
    return verdicts


# -- multi-head attention --------------------------------------------------------------------------
def _w(sd: Mapping[str, Tensor], p: str, t: str) -> Tensor:
    return sd[f"{p}_proj.{t}"]


def torch_mha(sd: Mapping[str, Tensor], d_model: int, n_heads: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention(batch_first=True)``, eval, holding the notebook's q/k/v/out projections."""
    m = nn.MultiheadAttention(d_model, n_heads, dropout=0.0, batch_first=True)
    with torch.no_grad():
        m.in_proj_weight.copy_(torch.cat([_w(sd, p, "weight") for p in "qkv"]))
        m.in_proj_bias.copy_(torch.cat([_w(sd, p, "bias") for p in "qkv"]))
        m.out_proj.weight.copy_(_w(sd, "out", "weight"))
        m.out_proj.bias.copy_(_w(sd, "out", "bias"))
    return m.eval()


def _torch_masks(mask: Tensor | None, B: int, nh: int, Tq: int, Tk: int) -> list[dict]:
    """The ways to hand the notebook's mask to nn.MultiheadAttention (True = may NOT attend there)."""
    if mask is None:
        return [{}]
    full = (~mask if mask.dtype == torch.bool else mask).expand(B, nh, Tq, Tk)
    ways = [{"attn_mask": full.reshape(B * nh, Tq, Tk)}]
    if all(n == 1 for n in mask.shape[:-2]):  # one (Tq, Tk) mask for every batch and head
        ways.append({"attn_mask": (~mask if mask.dtype == torch.bool else mask).expand(
            *mask.shape[:-2], Tq, Tk).reshape(Tq, Tk)})
    if mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1:
        ways.append({"key_padding_mask": ~mask[:, 0, 0, :]})
    return ways


def mha_references(sd: Mapping[str, Tensor], n_heads: int, query: Tensor, key: Tensor, value: Tensor,
                   mask: Tensor | None = None) -> dict[str, Tensor]:
    """Outputs of every reference route for ``MultiHeadAttention(query, key, value, mask)`` with
    the notebook's weights ``sd``: need_weights True and False (a delegating module may ask its
    reference for weights whatever it is asked), gradients on and off, and weights that require
    gradients or not (``torch.matmul`` folds a strided 3-D input into one matrix product or not
    depending on that, and the two round differently)."""
    B, Tq, C = query.shape
    Tk = key.size(1)
    R: dict[str, Tensor] = {}
    self_attention = key.shape == query.shape and torch.equal(key, query) and torch.equal(value, query)
    masks = _torch_masks(mask, B, n_heads, Tq, Tk)
    with one_thread():
        for trainable in (True, False):
            ref = torch_mha(sd, C, n_heads).requires_grad_(trainable)
            cm = course.nn.MultiHeadAttention(C, n_heads)
            cm.load_state_dict(dict(sd))
            cm.eval().requires_grad_(trainable)
            for grad in (True, False):
                with torch.set_grad_enabled(grad):
                    tag = f"{trainable:d}{grad:d}"
                    for nw in (False, True):
                        w = " with need_weights=True" if nw else ""
                        for i, kw in enumerate(masks):
                            _attempt(R, f"nn.MultiheadAttention{w} [{tag}{i}]", lambda: ref(
                                query, key, value, need_weights=nw, average_attn_weights=False, **kw)[0])
                            if self_attention:  # one tensor three times: the fused / fast paths
                                _attempt(R, f"nn.MultiheadAttention{w} (self-attention path) [{tag}{i}]",
                                         lambda: ref(query, query, query, need_weights=nw, **kw)[0])
                            _attempt(R, f"F.multi_head_attention_forward{w} [{tag}{i}]",
                                     lambda: F.multi_head_attention_forward(
                                         query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), C,
                                         n_heads, ref.in_proj_weight, ref.in_proj_bias, None, None, False, 0.0,
                                         ref.out_proj.weight, ref.out_proj.bias, training=False, need_weights=nw,
                                         average_attn_weights=False, **kw)[0].transpose(0, 1))
                        _attempt(R, f"course.nn.MultiHeadAttention{w} [{tag}]",
                                 lambda: cm(query, key, value, mask=mask, need_weights=nw)[0])
                        if not grad:
                            _attempt(R, f"torch._native_multi_head_attention{w} [{tag}]",
                                     lambda: torch._native_multi_head_attention(
                                         query, key, value, C, n_heads, ref.in_proj_weight, ref.in_proj_bias,
                                         ref.out_proj.weight, ref.out_proj.bias, additive(mask), nw, False)[0])
        with torch.no_grad():
            q, k, v = (_split(F.linear(x, _w(sd, p, "weight"), _w(sd, p, "bias")), n_heads)
                       for p, x in zip("qkv", (query, key, value)))
            for name, pair in attention_references(q, k, v, mask).items():
                if name != COURSE_SDPA:  # that one is the reference the check substitutes: the honest route
                    R[f"{name}, inside MultiHeadAttention"] = _out_proj(sd, _merge(pair[0]))
    return R


def _split(t: Tensor, nh: int) -> Tensor:
    B, T, C = t.shape
    return t.view(B, T, nh, C // nh).transpose(1, 2)


def _merge(y: Tensor) -> Tensor:
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


def _out_proj(sd, y: Tensor, how: str = "linear") -> Tensor:
    if how == "matmul":
        return y @ _w(sd, "out", "weight").T + _w(sd, "out", "bias")
    return F.linear(y, _w(sd, "out", "weight"), _w(sd, "out", "bias"))


def _projections(sd, query, key, value, how: str) -> list[Tensor]:
    if how == "fused":
        W = torch.cat([_w(sd, p, "weight") for p in "qkv"])
        b = torch.cat([_w(sd, p, "bias") for p in "qkv"])
        C = query.size(-1)
        return [F.linear(x, W, b)[..., i * C:(i + 1) * C] for i, x in enumerate((query, key, value))]
    if how == "matmul":
        return [x @ _w(sd, p, "weight").T + _w(sd, p, "bias") for p, x in zip("qkv", (query, key, value))]
    return [F.linear(x, _w(sd, p, "weight"), _w(sd, p, "bias")) for p, x in zip("qkv", (query, key, value))]


def reference_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Pair:
    """What the notebook's ``reference_attention`` (substituted for the student's attention) returns."""
    return course.nn.scaled_dot_product_attention(q, k, v, mask, need_weights=True)


MHA_INLINE = ("q @ k^T / sqrt(d) (the solution)", "q @ k^T * d ** -0.5", "(q / sqrt(d)) @ k^T",
              "(q * d ** -0.5) @ k^T", "einsum", "hand-written softmax", "float64 inside, cast back")
"""Attention written inline in MultiHeadAttention (instead of calling scaled_dot_product_attention)."""


def mha_honest(sd: Mapping[str, Tensor], n_heads: int, query: Tensor, key: Tensor, value: Tensor,
               mask: Tensor | None = None) -> dict[str, Tensor]:
    """Outputs of plain MultiHeadAttention implementations whose ``scaled_dot_product_attention``
    is :func:`reference_attention` (as in the checks), or that write attention inline:
    projections fused or separate, ``nn.Linear`` or ``@``, heads strided or contiguous."""
    attentions: dict[str, Callable] = {"calls scaled_dot_product_attention": lambda *a: reference_attention(*a)}
    attentions.update({f"inline {n}": HONEST_ATTENTION[n] for n in MHA_INLINE})
    H: dict[str, Tensor] = {}
    with one_thread(), torch.no_grad():
        for trainable in (True, False):  # nn.Parameter weights, or plain tensors (see mha_references)
            w = {n: t.detach().clone().requires_grad_(trainable) for n, t in sd.items()}
            for proj in ("linear", "matmul", "fused"):
                qkv = _projections(w, query, key, value, proj)
                for contiguous in (False, True):
                    heads = [_split(t, n_heads) for t in qkv]
                    if contiguous:
                        heads = [t.contiguous() for t in heads]
                    for att_name, att in attentions.items():
                        y = _merge(att(*heads, mask)[0])
                        for out in ("linear", "matmul"):
                            H[f"{att_name}, {proj} projections, {'contiguous' if contiguous else 'strided'} "
                              f"heads, {out} out_proj [{trainable:d}]"] = _out_proj(w, y, out)
    return H


# -- encoder and decoder blocks --------------------------------------------------------------------
def _copy_linear_norms(sd: Mapping[str, Tensor], ref: nn.Module, names) -> None:
    with torch.no_grad():
        for name in names:
            getattr(ref, name).weight.copy_(sd[f"{name}.weight"])
            getattr(ref, name).bias.copy_(sd[f"{name}.bias"])


def _copy_mha(sd: Mapping[str, Tensor], prefix: str, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([sd[f"{prefix}{p}_proj.weight"] for p in "qkv"]))
        ref.in_proj_bias.copy_(torch.cat([sd[f"{prefix}{p}_proj.bias"] for p in "qkv"]))
        ref.out_proj.weight.copy_(sd[f"{prefix}out_proj.weight"])
        ref.out_proj.bias.copy_(sd[f"{prefix}out_proj.bias"])


def encoder_references(sd: Mapping[str, Tensor], n_heads: int, d_ff: int, norm_first: bool, x: Tensor,
                       mask: Tensor | None = None) -> dict[str, Tensor]:
    """Outputs of ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` (slow and fast paths)
    for ``EncoderBlock(x, mask)`` with the notebook's weights; ``mask`` a padding mask (B, 1, 1, S)."""
    C = x.size(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = nn.TransformerEncoderLayer(C, n_heads, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                           norm_first=norm_first)
        _copy_mha(sd, "self_attn.", layer.self_attn)
        _copy_linear_norms(sd, layer, ("linear1", "linear2", "norm1", "norm2"))
        layer.eval()
        stack = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()
    kw = {} if mask is None else {"src_key_padding_mask": ~mask[:, 0, 0, :]}
    R: dict[str, Tensor] = {}
    with one_thread():
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                _attempt(R, f"nn.TransformerEncoderLayer [{grad:d}]", lambda: layer(x, **kw))
                _attempt(R, f"nn.TransformerEncoder [{grad:d}]",
                         lambda: stack(x, mask=None, **({"src_key_padding_mask": kw["src_key_padding_mask"]}
                                                        if kw else {})))
        if mask is not None:
            full = (~mask).expand(x.size(0), n_heads, x.size(1), x.size(1)).reshape(-1, x.size(1), x.size(1))
            _attempt(R, "nn.TransformerEncoderLayer [src_mask]", lambda: layer(x, src_mask=full))
    return {n: (t.to_padded_tensor(0.0) if t.is_nested else t) for n, t in R.items()}


def decoder_references(sd: Mapping[str, Tensor], n_heads: int, d_ff: int, norm_first: bool, y: Tensor,
                       memory: Tensor, tgt_mask: Tensor | None = None,
                       memory_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Outputs of ``nn.TransformerDecoderLayer`` for ``DecoderBlock(y, memory, tgt_mask, memory_mask)``
    (``tgt_mask`` (T, T) bool, ``memory_mask`` a padding mask (B, 1, 1, S); True = may attend)."""
    C = y.size(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = nn.TransformerDecoderLayer(C, n_heads, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                           norm_first=norm_first)
    _copy_mha(sd, "self_attn.", layer.self_attn)
    _copy_mha(sd, "cross_attn.", layer.multihead_attn)
    _copy_linear_norms(sd, layer, ("linear1", "linear2", "norm1", "norm2", "norm3"))
    layer.eval()
    kw = {}
    if tgt_mask is not None:
        kw["tgt_mask"] = ~tgt_mask
    if memory_mask is not None:
        kw["memory_key_padding_mask"] = ~memory_mask[:, 0, 0, :]
    R: dict[str, Tensor] = {}
    with one_thread():
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                _attempt(R, f"nn.TransformerDecoderLayer [{grad:d}]", lambda: layer(y, memory, **kw))
                if tgt_mask is not None:
                    _attempt(R, f"nn.TransformerDecoderLayer [causal {grad:d}]",
                             lambda: layer(y, memory, tgt_is_causal=True, **kw))
    return R


def display_name(reference: str) -> str:
    """A reference's name without the bracketed variant tag used to keep the names unique."""
    return reference.split(" [", 1)[0]
