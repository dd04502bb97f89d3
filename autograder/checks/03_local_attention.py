"""Hidden checks of assignment 03 (local self-attention for images), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``03_local_attention.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs and expected values are made here,
from the course's references (``course.local_attention``: the one home of the solution, also used by the notebook's
grade cells), from hand-made cases (K = 1, identical keys, shifted images) and from the memory the computation holds
(``course.device.TensorMemory``, run in the student's kernel). Conventions as in 01's and 02's checks:

- each exercise is graded with the references of the parts it builds on (``h.substituted``), so a mistake costs
  points once (``tests/mutants/03_local_attention/`` proves it);
- a check "(the visible tests)" repeats its grade cell's asserts exactly (same seeds, same calls, the same
  references substituted): it disagrees with the notebook's run only when something was tampered with;
- a failure message's first line says what is wrong and where; ``likely=`` names the classic mistake a result
  matches (absolute positions, padding attended, a 1/sqrt(D) scale, halves swapped ...): those tables are this file's;
- the other checks run with course.local_attention's answer to the part forbidden (``owns``, ``_own``: also through
  an alias or a subclass), and no cell of the student's may import it or copy its code (``_no_reference``);
- the memory checks (chunked attention, the layer with ``chunk``) meter the student's kernel with
  ``course.device.TensorMemory``, calibrated on a tensor of known size first (the hidden checks run after the whole
  notebook, so a patch of course.device anywhere in it would otherwise fool them), and refuse a notebook whose cells
  patch imported modules or hook into torch's dispatch (``_no_tampering``);
- each grade cell's checks stay well under 2 s on a CPU.

Memory is counted in units of ``U``, the bytes of the whole image's unfolded keys, ``B * N * D * K*K * H * W * 4``
(float32). Measured on the course's answers (B=1, N=2, D=4, 16x16, K=5, chunk 2): the largest tensor of a forward
pass is 0.375 U (one slab of 2 + 4 rows), 1.0 U when the whole image is unfolded at once; a training step (forward
and backward, inputs, their gradients and the request's copies counted) peaks at 1.98 U with a checkpoint per slab,
7.8 U without one (every slab's unfolded keys and values kept for the backward pass). The thresholds, 0.5 U and 3 U,
leave a factor 1.3-1.5 to the course's answer and 2-2.6 to those mistakes.
"""
from __future__ import annotations

import ast
import contextlib
import math
import re
import time
import zlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import course.local_attention as ref
from autograder.checkkit import (Answers, check_every_parameter_learns, check_module_grads, check_parameters, drawn,
                                 load_weights, module, pair, seed_kernel, tensor, what)
from autograder.trusted import RemoteObject, StudentError, check
from course.testing import check_close, check_no_delegation, check_rows_sum_to_one, seeded

REF = "course.local_attention."
OUT_DIMS = ("batch", "head", "channel", "row", "column")
W_DIMS = ("batch", "head", "row", "column", "neighbour row", "neighbour column")
Y_DIMS = ("batch", "channel", "row", "column")


def _warm_up() -> None:
    """What the references import or build on first use (unfold's backward, BN): when the checks load."""
    q = torch.randn(1, 1, 2, 3, 3, requires_grad=True)
    out, w = ref.local_attention(q, q, q, torch.zeros(1, 3, 1), torch.zeros(1, 3, 1), 3)
    (out.sum() + w.sum()).backward()
    nn.BatchNorm2d(2)(torch.randn(2, 2, 2, 2))


_warm_up()

# ==================================================================================================
# the course's answers: not imported, not copied, not run
# ==================================================================================================
ANSWERS = Answers("course.local_attention")
_no_reference, _own, owns = ANSWERS.scan, ANSWERS.forbidden, ANSWERS.owns


LOOPS = ("local_attention calls local_attention_naive (the loops over pixels and offsets): vectorise it, all pixels "
         "and offsets at once (F.unfold, or shifted copies of k and v)")


# ==================================================================================================
# inputs and the classic mistakes, computed here
# ==================================================================================================
def _inputs(B: int, N: int, D: int, H: int, W: int, K: int, Dv: int | None = None, dtype=torch.float32):
    q, k = torch.randn(B, N, D, H, W, dtype=dtype), torch.randn(B, N, D, H, W, dtype=dtype)
    v = torch.randn(B, N, D if Dv is None else Dv, H, W, dtype=dtype)
    return q, k, v, torch.randn(N, K, D // 2, dtype=dtype), torch.randn(N, K, D // 2, dtype=dtype)


def _where(q, v, K) -> str:
    B, N, D, H, W = q.shape
    dv = f", Dv={v.shape[2]}" if v.shape[2] != D else ""
    return f"(B={B}, N={N}, D={D}{dv}, H={H}, W={W}, K={K}" + (", float64)" if q.dtype == torch.float64 else ")")


def _inside(H: int, W: int, K: int) -> torch.Tensor:
    """``[H, W, K, K]``: True where pixel (i, j)'s neighbour (i + dy, j + dx) is inside the image."""
    P = K // 2
    rows = (torch.arange(H)[:, None] + torch.arange(-P, P + 1)[None, :])  # (H, K)
    cols = (torch.arange(W)[:, None] + torch.arange(-P, P + 1)[None, :])  # (W, K)
    r_in, c_in = (rows >= 0) & (rows < H), (cols >= 0) & (cols < W)
    return r_in[:, None, :, None] & c_in[None, :, None, :]


def _attend(q, k, v, rel_h, rel_w, K: int, *, rel: str = "relative", scale: float = 1.0, mask: str = "-inf",
            over: str = "neighbours") -> tuple[torch.Tensor, torch.Tensor]:
    """Local attention with a planted mistake: ``(out [B, N, Dv, H, W], weights [B, N, H, W, K, K])``.

    ``rel``: "relative" (right), "halves" (rows on the second half), "offsets" (rel_h by the column offset), "sign"
    (r_(i-a)), "none"; ``mask``: "-inf" (right), "none" (zero padding attended), "after" (zeroed after a softmax over
    every position); ``over``: the softmax's axis, "neighbours" (right), "heads", "columns"."""
    B, N, D, H, W = q.shape
    P, half = K // 2, D // 2

    def nb(x):  # (B, N, C, H, W) -> (B, N, C, K, K, H, W), zero outside
        return F.unfold(x.reshape(B * N, -1, H, W), K, padding=P).view(B, N, -1, K, K, H, W)

    logits = torch.einsum("bndhw,bndyxhw->bnyxhw", q, nb(k))
    rh, rw = (rel_h.flip(1), rel_w.flip(1)) if rel == "sign" else (rel_h, rel_w)
    first, second = q[:, :, :half], q[:, :, half:]
    if rel in ("relative", "sign"):
        logits = logits + torch.einsum("bndhw,nyd->bnyhw", first, rh)[:, :, :, None] \
            + torch.einsum("bndhw,nxd->bnxhw", second, rw)[:, :, None, :]
    elif rel == "halves":  # the row embedding on the second half, the column one on the first
        logits = logits + torch.einsum("bndhw,nxd->bnxhw", first, rel_w)[:, :, None, :] \
            + torch.einsum("bndhw,nyd->bnyhw", second, rel_h)[:, :, :, None]
    elif rel == "offsets":  # rel_h indexed by the column offset, rel_w by the row offset
        logits = logits + torch.einsum("bndhw,nxd->bnxhw", first, rel_h)[:, :, None, :] \
            + torch.einsum("bndhw,nyd->bnyhw", second, rel_w)[:, :, :, None]
    logits = logits * scale
    inside = _inside(H, W, K).permute(2, 3, 0, 1)  # (K, K, H, W)
    if mask == "-inf":
        logits = logits.masked_fill(~inside, float("-inf"))
    if over == "neighbours":
        w = logits.flatten(2, 3).softmax(2).view_as(logits)
    elif over == "heads":
        w = logits.softmax(1).nan_to_num(0.0)
    else:
        w = logits.softmax(-1).nan_to_num(0.0)
    if mask == "after":
        w = w.masked_fill(~inside, 0.0)
    out = torch.einsum("bnyxhw,bndyxhw->bndhw", w, nb(v))
    return out, w.permute(0, 1, 4, 5, 2, 3)


def _mistakes(q, k, v, rel_h, rel_w, K: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What the classic mistakes return: label -> (out, weights)."""
    D = q.shape[2]
    found = {
        "no -inf mask: positions outside the image (zero padding) take part in the softmax": dict(mask="none"),
        "a softmax over every position, zeroed outside the image afterwards without renormalising":
            dict(mask="after"),
        "logits scaled by 1/sqrt(D): local attention here has no scale (as in the paper)":
            dict(scale=1 / math.sqrt(D)),
        "the row and column halves swapped: q[:D/2] pairs with rel_h[P + dy] (rows), q[D/2:] with rel_w[P + dx]":
            dict(rel="halves"),
        "rel_h indexed by the column offset and rel_w by the row offset: rel_h[P + dy], rel_w[P + dx]":
            dict(rel="offsets"),
        "the offsets' sign flipped: r_(a-i, b-j) is at index P + (a - i), not P - (a - i)": dict(rel="sign"),
        "no relative embeddings: the logit is q . (k_ab + r_(a-i, b-j))": dict(rel="none"),
        "a softmax over the heads instead of the K*K neighbours": dict(over="heads"),
        "a softmax over the image's columns instead of the K*K neighbours": dict(over="columns"),
        "uniform weights over the neighbourhood: a softmax over the channels before the dot product?":
            dict(rel="none", scale=0.0),
    }
    with torch.no_grad():
        return {label: _attend(q, k, v, rel_h, rel_w, K, **kw) for label, kw in found.items()}


def _check_outside(w: torch.Tensor, K: int, where: str) -> None:
    """``weights [B, N, H, W, K, K]`` are exactly 0 outside the image, and sum to 1 over the neighbourhood."""
    H, W = w.shape[2], w.shape[3]
    P = K // 2
    bad = (w != 0) & ~_inside(H, W, K)
    if bool(bad.any()):
        b, n, i, j, y, x = (int(t) for t in bad.nonzero()[0])
        a, c = i + y - P, j + x - P
        outside = " and ".join(([f"row {a}"] if not 0 <= a < H else []) + ([f"column {c}"] if not 0 <= c < W else []))
        raise AssertionError(f"weights of pixel ({i}, {j}) give weight {float(w[b, n, i, j, y, x]):.3g} to {outside}, "
                             f"outside the image: padded positions must never be attended (weight exactly 0: their "
                             f"logits -inf before the softmax) {where}")
    check_rows_sum_to_one(w.flatten(-2), name=f"weights {where}",
                          dims=("batch", "head", "row", "column", "neighbour"))


def _check_attention(out, w, expected: tuple[torch.Tensor, torch.Tensor], args: tuple, K: int, where: str, *,
                     likely: bool = True) -> None:
    """The student's (out, weights) against the reference's, the mistakes named; weights 0 outside, rows sum to 1."""
    q, v = args[0], args[2]
    B, N, D, H, W = q.shape
    out = tensor(out, f"out {where}")
    w = tensor(w, f"weights {where}")
    if tuple(out.shape) != (B, N, v.shape[2], H, W):
        raise AssertionError(f"out has shape {tuple(out.shape)}, expected (B, N, Dv, H, W) = "
                             f"{(B, N, v.shape[2], H, W)} {where}")
    if tuple(w.shape) == (B, N, K, K, H, W) and (H, W) != (K, K):
        raise AssertionError(f"weights have shape (B, N, K, K, H, W) {where}: return them as (B, N, H, W, K, K), "
                             "weights[b, n, i, j, P + dy, P + dx]")
    if tuple(w.shape) != (B, N, H, W, K, K):
        raise AssertionError(f"weights have shape {tuple(w.shape)}, expected (B, N, H, W, K, K) = {(B, N, H, W, K, K)} "
                             f"{where}")
    wrong = _mistakes(*args, K) if likely else {}
    tol = dict(atol=1e-5, rtol=1e-4) if q.dtype == torch.float32 else dict(atol=1e-9, rtol=1e-7)
    flipped = {"the neighbourhood transposed: weights[..., P + dy, P + dx] (row offset first)":
               expected[1].transpose(-1, -2)} if K > 1 else {}
    check_close(w, expected[1], **tol, name=f"weights {where}", dims=W_DIMS,
                likely={**{k: x[1] for k, x in wrong.items()}, **flipped})
    check_close(out, expected[0], **tol, name=f"out {where}", dims=OUT_DIMS, likely={k: x[0] for k, x in wrong.items()})
    _check_outside(w, K, where)


def _shifted(N, D, H, W, K, s: int, t: int):
    """Two H x W crops of one larger image, the second shifted by (s, t), stacked along the batch (q, k, v, rel_h,
    rel_w); and the pixels whose neighbourhoods are inside both crops (rows, columns of the second crop)."""
    big = _inputs(1, N, D, H + s, W + t, K)
    crops = tuple(torch.cat([x[..., :H, :W], x[..., s:, t:]]) if x.dim() == 5 else x for x in big)
    P = K // 2
    return crops, (slice(P, H - P - s), slice(P, W - P - t))


def _check_shifted(a: torch.Tensor, b: torch.Tensor, s: int, t: int, rows: slice, cols: slice, what_: str,
                   where: str) -> None:
    """``b[..., i, j]`` (the shifted crop) equals ``a[..., i + s, j + t]`` on the pixels ``rows, cols``."""
    got, expected = b[..., rows, cols], a[..., rows.start + s:rows.stop + s, cols.start + t:cols.stop + t]
    bad = ~torch.isclose(got, expected, atol=1e-5, rtol=1e-4)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        i, j = idx[-2] + rows.start, idx[-1] + cols.start
        raise AssertionError(f"absolute positions: {what_} of a pixel change when the image is shifted by ({s}, {t}) "
                             f"(pixel ({i}, {j}) of the shifted crop, ({i + s}, {j + t}) of the first), though its "
                             "whole neighbourhood moves with it: the embeddings must depend on the offset (a - i, "
                             f"b - j), not on the position (a, b) {where}")


def _same_weights(h, obj: RemoteObject, reference: nn.Module, name: str) -> None:
    """Load ``reference``'s weights into the student's module; a bias the reference has not (an optional extra) gets
    zeros, and a bias the student has not is zeroed in ``reference``."""
    theirs = obj.state_dict()
    state = reference.state_dict()
    for key in list(state):
        if key not in theirs and key.endswith(".bias"):
            with torch.no_grad():
                reference.get_parameter(key).zero_()
            del state[key]
    for key, value in theirs.items():
        if key not in state and key.endswith(".bias") and isinstance(value, torch.Tensor):
            state[key] = torch.zeros_like(value)
    load_weights(obj, state, name)


# ==================================================================================================
# 1. the loops
# ==================================================================================================
@check("grade_naive", "shapes; the weights and out of pixel (2, 3), head 1, by hand; pixel (0, 0) gives no weight "
                      "outside the image (the visible tests)", mirrors_visible=True)
def naive_visible(h):
    with seeded(1):
        B, N, D, H, W, K = 1, 2, 4, 4, 5, 3
        q, k, v = (torch.randn(B, N, D, H, W) for _ in range(3))
        rel_h, rel_w = torch.randn(N, K, D // 2), torch.randn(N, K, D // 2)
    out, weights = pair(h.call("local_attention_naive", q, k, v, rel_h, rel_w, K), "local_attention_naive")
    out, weights = tensor(out, "out"), tensor(weights, "weights")
    if not (out.shape == (B, N, D, H, W) and weights.shape == (B, N, H, W, K, K)):
        raise AssertionError("out should be (B, N, D, H, W) and weights (B, N, H, W, K, K)")
    n, i, j = 1, 2, 3
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    logits = torch.stack([q[0, n, :, i, j] @ (k[0, n, :, i + dy, j + dx]
                                              + torch.cat([rel_h[n, 1 + dy], rel_w[n, 1 + dx]]))
                          for dy, dx in offsets])
    a = logits.softmax(0)
    check_close(weights[0, n, i, j].flatten(), a, atol=1e-5, rtol=1e-5,
                name="weights of pixel (2, 3), head 1 vs softmax_ab(q . k_ab + q . r_(a-i, b-j))")
    y = sum(a[t] * v[0, n, :, i + dy, j + dx] for t, (dy, dx) in enumerate(offsets))
    check_close(out[0, n, :, i, j], y, atol=1e-5, rtol=1e-5, name="out of pixel (2, 3), head 1 vs sum_ab a_ab v_ab")
    if not (weights[0, :, 0, 0, 0].abs().sum() == 0 and weights[0, :, 0, 0, :, 0].abs().sum() == 0):
        raise AssertionError("pixel (0, 0) gives weight to positions outside the image (row -1 or column -1)")


NAIVE_SIZES = [  # B, N, D, H, W, K, Dv, dtype: H != W, H or W < K, K = 1, 3, 5, several heads, v with another D
    (1, 1, 2, 1, 4, 3, 2, torch.float32), (2, 2, 4, 3, 5, 5, 3, torch.float32), (1, 3, 6, 5, 2, 3, 6, torch.float32),
    (1, 2, 2, 4, 3, 1, 2, torch.float32), (1, 1, 4, 6, 5, 5, 4, torch.float64), (2, 2, 2, 2, 3, 5, 1, torch.float32)]


@check("grade_naive", "matches the reference on random sizes (H != W, H or W < K, K = 1, 3, 5, 1-3 heads, v with "
                      "another D, float64); weights exactly 0 outside the image, rows sum to 1")
@owns("local_attention_naive", "local_attention")
def naive_random(h):
    cases = drawn(301, len(NAIVE_SIZES), lambda t: (NAIVE_SIZES[t], _inputs(*NAIVE_SIZES[t][:6], NAIVE_SIZES[t][6],
                                                                            dtype=NAIVE_SIZES[t][7])))
    for (B, N, D, H, W, K, Dv, dtype), args in cases:
        where = _where(args[0], args[2], K)
        out, w = pair(h.call("local_attention_naive", *args, K), "local_attention_naive")
        _check_attention(out, w, ref.local_attention(*args, K), args, K, where)


@check("grade_naive", "K = 1 gives v with weight 1; identical keys and zero embeddings give the mean of the "
                      "in-image neighbours' values; a shifted image gives shifted results (relative positions); no "
                      "course.local_attention")
@owns("local_attention_naive", "local_attention")
def naive_cases(h):
    _check_cases(h, "local_attention_naive", (2, 2, 4, 4, 5), shift=(6, 7, 1, 1))
    _no_reference(h, "naive")


def _check_cases(h, fn: str, size: tuple, shift: tuple) -> None:
    """K = 1, identical keys, a shifted image: the hand-made cases of the loops and of the vectorised version.
    ``size``: (B, N, D, H, W); ``shift``: (H, W, s, t) of the two crops, the second shifted by (s, t)."""
    B, N, D, H, W = size
    Hs, Ws, s, t = shift
    with seeded(311):
        q, k, v, rel_h, rel_w = _inputs(B, N, D, H, W, 1)
        c = torch.randn(1, N, D, 1, 1)
        q3, _, v3, _, _ = _inputs(1, N, D, H, W, 3)
        crops, (rows, cols) = _shifted(N, D, Hs, Ws, 3, s, t)
    out, w = pair(h.call(fn, q, k, v, rel_h, rel_w, 1), fn)
    out, w = tensor(out, "out (K=1)"), tensor(w, "weights (K=1)", shape=(B, N, H, W, 1, 1), dims=W_DIMS)
    check_close(w, torch.ones(B, N, H, W, 1, 1), atol=1e-6, name="weights with K = 1 (each pixel attends to itself "
                "alone)", dims=W_DIMS)
    check_close(out, v, atol=1e-5, name="out with K = 1 (each pixel's own value)", dims=OUT_DIMS)
    keys = c.expand_as(q3).contiguous()
    for K in (3, 5):  # identical keys, no embeddings: equal logits, so the mean of the neighbours inside the image
        zeros = torch.zeros(N, K, D // 2)
        where = f"(identical keys, rel_h = rel_w = 0, H={H}, W={W}, K={K})"
        out, w = pair(h.call(fn, q3, keys, v3, zeros, zeros, K), fn)
        mean = F.avg_pool2d(v3.flatten(0, 1), K, 1, K // 2, count_include_pad=False).view_as(v3)
        check_close(tensor(out, f"out {where}"), mean, atol=1e-5, name=f"out {where}", dims=OUT_DIMS,
                    likely={"the mean over all K*K positions, zero padding included: positions outside the image "
                            "must get no weight": F.avg_pool2d(v3.flatten(0, 1), K, 1, K // 2).view_as(v3)},
                    hint="every key scores the same, so each pixel averages the values of its neighbours inside "
                         "the image")
        _check_outside(tensor(w, f"weights {where}", shape=(1, N, H, W, K, K), dims=W_DIMS), K, where)
    out, w = pair(h.call(fn, *crops, 3), fn)
    where = f"(two crops of one image, H={Hs}, W={Ws}, K=3)"
    out, w = tensor(out, f"out {where}"), tensor(w, f"weights {where}", shape=(2, N, Hs, Ws, 3, 3), dims=W_DIMS)
    _check_shifted(w[0].permute(0, 3, 4, 1, 2), w[1].permute(0, 3, 4, 1, 2), s, t, rows, cols, "the weights", where)
    _check_shifted(out[0], out[1], s, t, rows, cols, "out", where)


# ==================================================================================================
# 2. vectorised (graded without the loops: local_attention_naive is the course's, and forbidden)
# ==================================================================================================
@check("grade_vectorised", "weights and out equal the loops' on (2, 2, 4, 6, 5), K = 5 (the visible tests)",
       mirrors_visible=True)
def vectorised_visible(h):
    with seeded(2):
        B, N, D, H, W, K = 2, 2, 4, 6, 5, 5
        q, k, v = (torch.randn(B, N, D, H, W) for _ in range(3))
        rel_h, rel_w = torch.randn(N, K, D // 2), torch.randn(N, K, D // 2)
    with h.substituted(local_attention_naive=REF + "local_attention_naive"):
        out, weights = pair(h.call("local_attention", q, k, v, rel_h, rel_w, K), "local_attention")
    out_ref, weights_ref = ref.local_attention_naive(q, k, v, rel_h, rel_w, K)
    out, weights = tensor(out, "out"), tensor(weights, "weights")
    if not (out.shape == out_ref.shape and weights.shape == weights_ref.shape):
        raise AssertionError("out should be (B, N, D, H, W) and weights (B, N, H, W, K, K)")
    check_close(weights, weights_ref, atol=1e-5, rtol=1e-5, name="weights vs the loop's", dims=W_DIMS)
    check_close(out, out_ref, atol=1e-5, rtol=1e-5, name="out vs the loop's", dims=OUT_DIMS)


@contextlib.contextmanager
def _vectorised(h) -> Iterator[None]:
    """The student's local_attention may not run the loops: the notebook's local_attention_naive is the course's,
    forbidden, and so is the course's local_attention."""
    with h.substituted(local_attention_naive=REF + "local_attention_naive"), \
            _own(h, "local_attention", "local_attention_naive", used={"local_attention_naive": LOOPS}):
        yield


VECTORISED_SIZES = [  # B, N, D, H, W, K, Dv, dtype
    (2, 2, 4, 6, 9, 3, 4, torch.float32), (1, 3, 2, 7, 4, 5, 2, torch.float32), (1, 1, 6, 3, 8, 7, 5, torch.float32),
    (2, 2, 4, 5, 5, 1, 4, torch.float32), (1, 2, 8, 9, 6, 7, 8, torch.float32), (1, 1, 2, 2, 3, 5, 3, torch.float32),
    (2, 1, 4, 6, 4, 3, 4, torch.float64), (1, 4, 2, 1, 6, 3, 2, torch.float32)]


@check("grade_vectorised", "matches the reference on random sizes (non-square, H or W < K, K = 1 to 7, 1-4 heads, v "
                           "with another D, float64); weights exactly 0 outside the image; border pixels whose keys "
                           "all score low give the padding no weight; logits of several hundred stay finite")
def vectorised_random(h):
    cases = drawn(401, len(VECTORISED_SIZES), lambda t: _inputs(*VECTORISED_SIZES[t][:6], VECTORISED_SIZES[t][6],
                                                                 dtype=VECTORISED_SIZES[t][7]))
    with seeded(402):  # keys that score far below 0 against every query: zero padding would win every softmax
        q = torch.rand(1, 2, 4, 5, 6) + 0.5
        low = (q, -3 * (torch.rand(1, 2, 4, 5, 6) + 0.5), torch.randn(1, 2, 4, 5, 6),
               torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
    with _vectorised(h):
        for size, args in zip(VECTORISED_SIZES, cases):
            K = size[5]
            out, w = pair(h.call("local_attention", *args, K), "local_attention")
            _check_attention(out, w, ref.local_attention(*args, K), args, K, _where(args[0], args[2], K))
        out, w = pair(h.call("local_attention", *low, 3), "local_attention")
        big = tuple(20 * a for a in low[:3]) + low[3:]  # logits of several hundred: exp() overflows float32
        out_big, w_big = pair(h.call("local_attention", *big, 3), "local_attention")
    _check_attention(out, w, ref.local_attention(*low, 3), low, 3, "(keys that all score far below 0, K=3)")
    if not (torch.isfinite(tensor(out_big, "out")).all() and torch.isfinite(tensor(w_big, "weights")).all()):
        raise AssertionError("inf or nan in out or weights for logits of several hundred (q, k ~ 20 x N(0, 1), K=3): "
                             "exp() overflows float32 above 88; use softmax (it subtracts the row's maximum first)")
    _check_attention(out_big, w_big, ref.local_attention(*big, 3), big, 3, "(logits of several hundred, K=3)",
                     likely=False)


@check("grade_vectorised", "gradients with respect to q, k, v, rel_h and rel_w (through out and weights) equal the "
                           "reference's, also where H < K")
def vectorised_gradients(h):
    with seeded(411):
        cases = [(_inputs(2, 2, 4, 5, 6, 3, 3), 3), (_inputs(1, 2, 2, 3, 4, 5), 5)]
        cots = [(torch.randn(a[2].shape), torch.randn(*a[0].shape[:2], *a[0].shape[3:], K, K)) for a, K in cases]
    for (args, K), cot in zip(cases, cots):
        with _vectorised(h):
            got = h.vjp("local_attention", (*args, K), cot)
        _check_grads(got, args, cot, lambda *a: ref.local_attention(*a, K),
                     f"local_attention {_where(args[0], args[2], K)}")


def _check_grads(got: Any, args: tuple, cots: tuple, reference, name: str) -> None:
    """Gradients from ``h.vjp`` (one per argument, the tensors first) against ``reference(*args)``'s."""
    leaves = [a.detach().clone().requires_grad_() for a in args]
    outs = reference(*leaves)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    torch.autograd.backward(outs, list(cots[:len(outs)]))
    if not isinstance(got, list) or len(got) < len(leaves):
        raise AssertionError(f"{name}: the gradients could not be computed, got {what(got)}")
    for label, d, leaf in zip(("q", "k", "v", "rel_h", "rel_w"), got, leaves):
        if d is None:
            raise AssertionError(f"{name}: no gradient reaches {label}: is it unused, or detached on the way (no "
                                 ".detach(), .item() or numpy)?")
        d = tensor(d, f"gradient of {label}")
        if not bool(torch.isfinite(d).all()):
            raise AssertionError(f"{name}: the gradient with respect to {label} has NaN or inf: a softmax over a "
                                 "row of -inf only, or -inf times 0 in the backward pass?")
        check_close(d, leaf.grad, atol=1e-5, rtol=1e-4, name=f"{name}: gradient with respect to {label}",
                    hint="every step must be a differentiable torch operation (no .detach(), .item() or numpy)")


@check("grade_vectorised", "a shifted image gives shifted results away from the borders (relative positions); "
                           "K = 1 and identical keys by hand; no loops (local_attention_naive not called, a 24x24 "
                           "image with K = 7 well under a second); no course.local_attention")
def vectorised_properties(h):
    with _vectorised(h):
        _check_cases(h, "local_attention", (2, 2, 4, 5, 4), shift=(7, 8, 1, 2))
        with seeded(421):
            small, args = _inputs(1, 2, 4, 3, 3, 7), _inputs(1, 2, 4, 24, 24, 7)
        h.call("local_attention", *small, 7)  # first call: caches, lazy imports
        start = time.perf_counter()
        out, w = pair(h.call("local_attention", *args, 7), "local_attention")
        took = time.perf_counter() - start
    if took > 0.5:
        raise AssertionError(f"local_attention took {took:.2f} s on a 24x24 image with K=7 (the course's takes a few "
                             "ms): no Python loops over the pixels and offsets, compute them all at once (F.unfold)")
    check_close(tensor(out, "out"), ref.local_attention(*args, 7)[0], atol=1e-5, name="out (24x24, K=7)",
                dims=OUT_DIMS)
    _no_reference(h, "vectorised")


# ==================================================================================================
# 3. chunked (graded with the reference local_attention)
# ==================================================================================================
REF_LA = dict(local_attention=REF + "local_attention")


@check("grade_chunked", "chunk 1, 3 and 7 of 7 rows equal local_attention's out (the visible tests)",
       mirrors_visible=True)
def chunked_visible(h):
    with seeded(3):
        B, N, D, H, W, K = 2, 2, 4, 7, 6, 3
        q, k, v = (torch.randn(B, N, D, H, W) for _ in range(3))
        rel_h, rel_w = torch.randn(N, K, D // 2), torch.randn(N, K, D // 2)
    out_ref, _ = ref.local_attention(q, k, v, rel_h, rel_w, K)
    with h.substituted(**REF_LA):
        for chunk in (1, 3, 7):
            out = tensor(h.call("local_attention_chunked", q, k, v, rel_h, rel_w, K, chunk), "out")
            if out.shape != out_ref.shape:
                raise AssertionError(f"chunk={chunk}: out should be (B, N, D, H, W)")
            check_close(out, out_ref, atol=1e-5, rtol=1e-5, name=f"chunk={chunk}: out vs local_attention's",
                        dims=OUT_DIMS)


def _slabs(q, k, v, rel_h, rel_w, K: int, chunk: int, halo: int) -> torch.Tensor:
    """Chunked attention whose slabs take ``halo`` rows on each side (the right one: P)."""
    H = q.shape[3]
    outs = []
    for r in range(0, H, chunk):
        lo, hi = max(r - halo, 0), min(r + chunk + halo, H)
        out, _ = ref.local_attention(q[..., lo:hi, :], k[..., lo:hi, :], v[..., lo:hi, :], rel_h, rel_w, K)
        outs.append(out[..., r - lo:min(r + chunk, H) - lo, :])
    return torch.cat(outs, 3)


CHUNKED_CASES = [  # B, N, D, H, W, K, Dv, dtype, chunks: 1, a non-divisor of H, >= H
    (1, 2, 4, 7, 5, 3, 4, torch.float32, (1, 2, 3, 7, 9)), (2, 1, 2, 3, 6, 5, 3, torch.float32, (1, 2, 4)),
    (1, 2, 4, 10, 4, 5, 4, torch.float32, (3, 4, 10)), (1, 1, 2, 6, 3, 7, 2, torch.float64, (1, 4, 6))]


@check("grade_chunked", "equals local_attention's out for chunk 1, a non-divisor of H and chunk >= H, on random "
                        "sizes (H < K too, float64); gradients with respect to q, k, v, rel_h, rel_w equal the "
                        "reference's")
@owns("local_attention_chunked")
def chunked_random(h):
    cases = drawn(501, len(CHUNKED_CASES), lambda t: _inputs(*CHUNKED_CASES[t][:7], dtype=CHUNKED_CASES[t][7]))
    with seeded(502):
        grad_case, grad_cot = _inputs(1, 2, 4, 7, 5, 3), torch.randn(1, 2, 4, 7, 5)
    with h.substituted(**REF_LA):
        for (B, N, D, H, W, K, Dv, dtype, chunks), args in zip(CHUNKED_CASES, cases):
            expected = ref.local_attention(*args, K)[0]
            P = K // 2
            for chunk in chunks:
                where = f"{_where(args[0], args[2], K)[:-1]}, chunk={chunk})"
                out = tensor(h.call("local_attention_chunked", *args, K, chunk), f"out {where}")
                if isinstance(out, torch.Tensor) and out.dim() == 5 and out.shape[3] < H:
                    raise AssertionError(f"out has {out.shape[3]} rows, expected H={H}: the last slab may be shorter "
                                         f"than chunk rows, keep it {where}")
                likely = {"each slab attended alone: the rows next to a slab's edge lose their neighbours in the "
                          "next slab (take P rows more on each side, keep the middle rows)":
                          _slabs(*args, K, chunk, 0)}
                if P > 1:
                    likely["slabs one row short on each side: rows r - P .. r + chunk - 1 + P"] = \
                        _slabs(*args, K, chunk, P - 1)
                tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-9, rtol=1e-7)
                check_close(out, expected, **tol, name=f"out {where}", dims=OUT_DIMS, likely=likely)
        for chunk in (2, 7):
            got = h.vjp("local_attention_chunked", (*grad_case, 3, chunk), (grad_cot,))
            _check_grads(got, grad_case, (grad_cot,), lambda *a: ref.local_attention(*a, 3)[0],
                         f"local_attention_chunked (chunk={chunk}, H=7, K=3)")


#: The memory case: U = B * N * D * K*K * H * W * 4 bytes, the whole image's unfolded keys.
MEM_CASE = dict(B=1, N=2, D=4, H=16, W=16, K=5, chunk=2)
LARGEST_MAX, TRAIN_PEAK_MAX = 0.5, 3.0  # in units of U (the course's answer: 0.375 and 1.98)


def _unfolded_bytes(B, N, D, H, W, K, **_) -> int:
    return B * N * D * K * K * H * W * 4


def _metered(h, run) -> tuple[int, int]:
    """(peak, largest) bytes of the tensors made while ``run()`` sends its requests: ``course.device.TensorMemory``
    entered in the student's kernel around them (the requests' own copies of the inputs count too). The meter is
    first calibrated on a tensor of known size, so that a notebook which patched course.device cannot hide the
    memory (its checks run after the whole notebook, whatever it changed)."""
    def meter(fn) -> tuple[Any, Any]:
        mem = h.library("course.device.TensorMemory")()
        mem.call_method("__enter__")
        try:
            fn()
        finally:
            mem.call_method("__exit__", None, None, None)
        return mem.attr("peak"), mem.attr("largest")

    known = meter(lambda: h.library("torch.ones")(32, 64))  # 8 KiB
    if known != (8192, 8192) and not (isinstance(known[1], int) and known[1] == 8192 and known[0] >= 8192):
        raise AssertionError(f"the memory meter of your notebook reports {known} bytes for one 8 KiB tensor: "
                             f"{TAMPER}")
    peak, largest = meter(run)
    if not (isinstance(peak, int) and isinstance(largest, int)):
        raise AssertionError(f"the memory could not be measured: {TAMPER}")
    return peak, largest


@check("grade_chunked", "memory: without gradients the largest tensor is one slab's (at most half the whole image's "
                        "unfolded keys for 2 + 4 of 16 rows); a training step recomputes each slab (checkpoint) and "
                        "peaks at most 3x the whole image's unfolded keys; nothing patches the meter; no "
                        "course.local_attention")
@owns("local_attention_chunked")
def chunked_memory(h):
    _no_tampering(h)
    c = MEM_CASE
    U = _unfolded_bytes(**c)
    with seeded(511):
        args = _inputs(c["B"], c["N"], c["D"], c["H"], c["W"], c["K"])
        cot = torch.randn(c["B"], c["N"], c["D"], c["H"], c["W"])
    where = f"(B={c['B']}, N={c['N']}, D={c['D']}, {c['H']}x{c['W']}, K={c['K']}, chunk={c['chunk']})"
    with h.substituted(**REF_LA):
        _, largest = _metered(h, lambda: h.call("local_attention_chunked", *args, c["K"], c["chunk"]))
        if largest / U > LARGEST_MAX:
            raise AssertionError(f"the whole image at once: without gradients the largest tensor of "
                                 f"local_attention_chunked is {largest / U:.2f} x the whole image's unfolded keys "
                                 f"(a slab of chunk + 2P rows holds {(c['chunk'] + c['K'] - 1) / c['H']:.2f} x) "
                                 f"{where}: run local_attention on one slab of rows at a time")
        peak, _ = _metered(h, lambda: h.vjp("local_attention_chunked", (*args, c["K"], c["chunk"]), (cot,)))
    if peak / U > TRAIN_PEAK_MAX:
        raise AssertionError(f"no checkpoint: a training step (forward and backward) of local_attention_chunked holds "
                             f"{peak / U:.1f} x the whole image's unfolded keys at its peak {where}, the course's "
                             f"answer about 2 x: recompute each slab in the backward pass (torch.utils.checkpoint, "
                             "use_reentrant=False) instead of keeping every slab's unfolded neighbourhoods alive")
    _no_reference(h, "chunked")


#: Code that changes what the grader measures: torch's dispatch, or attributes of imported modules.
TAMPER = ("the grader measures memory with course.device.TensorMemory (torch's dispatch): code that patches it or "
          "hooks into torch's dispatch is not allowed")
DISPATCH = {name: TAMPER for name in ("TorchDispatchMode", "_python_dispatch", "TorchFunctionMode",
                                      "__torch_dispatch__", "__torch_function__", "_get_current_dispatch_mode",
                                      "torch.overrides", "_push_mode", "_pop_mode")}
_MODULE_NAMES = {"torch", "nn", "F", "course", "np", "numpy", "plt", "math", "sys", "os", "functools", "itertools",
                 "importlib", "builtins", "types", "gc", "weakref", "inspect", "checkpoint", "Tensor", "contextlib",
                 "measure", "TensorMemory"}
_FLAGS = ("torch.backends.", "torch._dynamo.config.", "torch._inductor.config.")  # settings, not patches


def _patched(source: str) -> list[str]:
    """Module attributes that ``source`` assigns or deletes (``course.device.measure = f``, ``setattr(torch, ...)``,
    ``sys.modules[...] = m``): honest code never does it (``torch.backends`` flags excepted)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    imported = set(_MODULE_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {a.asname or a.name for a in node.names}

    def dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return ".".join([node.id, *reversed(parts)])
        return None

    def flat(targets):
        for t in targets:
            if isinstance(t, (ast.Tuple, ast.List)):
                yield from flat(t.elts)
            else:
                yield t

    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in flat(targets):
            path = dotted(t) if isinstance(t, ast.Attribute) else None
            if path and path.split(".")[0] in imported and not path.startswith(_FLAGS):
                found.append(f"`{path} = ...` (line {node.lineno})")
            if isinstance(t, ast.Subscript) and dotted(t.value) == "sys.modules":
                found.append(f"`sys.modules[...] = ...` (line {node.lineno})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") \
                and node.args:
            path = dotted(node.args[0])
            if path and path.split(".")[0] in imported:
                found.append(f"`{node.func.id}({path}, ...)` (line {node.lineno})")
    return found


def _no_tampering(h) -> None:
    """No cell of the student's patches what the memory checks measure with."""
    source = h.student_source()
    found = _patched(source)
    if found:
        raise AssertionError(f"your code replaces part of an imported module: {', '.join(found[:3])}: a notebook "
                             "may not patch torch or the course's modules (the checks and the memory measurement "
                             "rely on them); define a function of your own instead")
    check_no_delegation(source, DISPATCH, forbid_dynamic=False)


# ==================================================================================================
# 4. the layer (graded with the reference local_attention and local_attention_chunked)
# ==================================================================================================
REF_FUNCTIONS = dict(local_attention=REF + "local_attention", local_attention_chunked=REF + "local_attention_chunked")


def _state(h, obj: RemoteObject, name: str, keys: tuple[str, ...]) -> dict:
    """The student's module's weights by the names of the notebook (which the visible test uses)."""
    state = obj.state_dict()
    missing = [k for k in keys if not isinstance(state.get(k), torch.Tensor)]
    if missing:
        raise AssertionError(f"{name} has no {', '.join(missing[:3])}: keep the names of the notebook")
    return state


@check("grade_layer", "y (2, 8, 5, 4); rel_h, rel_w (heads, K, D // 2); y = local_attention of the projected q, k, v "
                      "(the visible tests)", mirrors_visible=True)
def layer_visible(h):
    with h.substituted(**REF_FUNCTIONS):
        seed_kernel(h, 4)
        layer = h.construct("LocalAttention2d", 6, 8, kernel_size=3, heads=2)
        x = tensor(h.library("torch.randn")(2, 6, 5, 4), "x")
        y = tensor(layer(x), "y")
    if tuple(y.shape) != (2, 8, 5, 4):
        raise AssertionError(f"y: shape {tuple(y.shape)}, expected (2, 8, 5, 4)")
    state = _state(h, layer, "LocalAttention2d", ("rel_h", "rel_w", "q_proj.weight", "k_proj.weight", "v_proj.weight"))
    if tuple(state["rel_h"].shape) != (2, 3, 2) or tuple(state["rel_w"].shape) != (2, 3, 2):
        raise AssertionError("rel_h and rel_w should be (heads, K, D // 2)")
    with torch.no_grad():
        q, k, v = (F.conv2d(x, state[f"{p}.weight"], state.get(f"{p}.bias")).view(2, 2, 4, 5, 4)
                   for p in ("q_proj", "k_proj", "v_proj"))
        out, _ = ref.local_attention(q, k, v, state["rel_h"], state["rel_w"], 3)
    check_close(y, out.reshape(2, 8, 5, 4), atol=1e-5, rtol=1e-5,
                name="y vs local_attention of the projected q, k, v (heads of D = C_out // heads channels)",
                dims=Y_DIMS)


def _layer_mistakes(layer: ref.LocalAttention2d, x: torch.Tensor) -> dict:
    K, N = layer.kernel_size, layer.heads
    with torch.no_grad():
        q, k, v = (p(x) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
        B, C, H, W = q.shape
        D = C // N

        def run(q, k, v, split, merge, rel_h=layer.rel_h, rel_w=layer.rel_w):
            return merge(ref.local_attention(split(q), split(k), split(v), rel_h, rel_w, K)[0])

        right, merge = (lambda t: t.view(B, N, D, H, W)), (lambda o: o.flatten(1, 2))
        wrong, unmerge = (lambda t: t.view(B, D, N, H, W).transpose(1, 2)), (lambda o: o.transpose(1, 2).flatten(1, 2))
        found = {"values from k_proj: v = v_proj(x)": run(q, k, k, right, merge),
                 "queries and keys swapped: q = q_proj(x), k = k_proj(x)": run(k, q, v, right, merge),
                 "rel_h and rel_w swapped": run(q, k, v, right, merge, layer.rel_w, layer.rel_h),
                 "no attention: y = v_proj(x)": v}
        if N > 1:
            found["heads split as (B, D, heads, H, W): head n holds channels n*D .. (n+1)*D - 1, "
                  "x.view(B, heads, D, H, W)"] = run(q, k, v, wrong, unmerge)
            found["heads split as (B, D, heads, H, W) but merged as (B, heads, D): view(B, heads, D, H, W)"] = \
                run(q, k, v, wrong, merge)
    return found


LAYER_CASES = [  # C_in, C_out, K, heads, chunk, x size (B, H, W)
    (6, 8, 3, 2, None, (2, 5, 7)), (5, 12, 5, 3, None, (1, 6, 4)), (4, 4, 1, 1, None, (2, 3, 5)),
    (3, 16, 3, 4, 2, (1, 7, 6)), (8, 8, 5, 2, 3, (2, 4, 6))]


@check("grade_layer", "equals the reference layer with the same weights (1-4 heads, K = 1, 3, 5, C_in != C_out, "
                      "non-square, chunk None or given); return_weights=True gives (y, weights [B, heads, H, W, K, "
                      "K])")
@owns("LocalAttention2d")
def layer_values(h):
    cases = drawn(601, len(LAYER_CASES), lambda t: (ref.LocalAttention2d(*LAYER_CASES[t][:4]).eval(),
                                                    torch.randn(LAYER_CASES[t][5][0], LAYER_CASES[t][0],
                                                                *LAYER_CASES[t][5][1:])))
    with h.substituted(**REF_FUNCTIONS):
        for (C_in, C_out, K, heads, chunk, _), (layer, x) in zip(LAYER_CASES, cases):
            where = f"(LocalAttention2d({C_in}, {C_out}, kernel_size={K}, heads={heads}, chunk={chunk}), x " \
                    f"{tuple(x.shape)})"
            student = module(h, "LocalAttention2d", C_in, C_out, kernel_size=K, heads=heads, chunk=chunk,
                             state=layer.state_dict())
            if chunk is None and K == 3:
                check_parameters(h, student, {n: tuple(p.shape) for n, p in layer.named_parameters()},
                                 name=f"LocalAttention2d({C_in}, {C_out}, kernel_size={K}, heads={heads})",
                                 want="the text's: q_proj, k_proj and v_proj (1x1 convolutions without bias), "
                                      "rel_h and rel_w")
            with torch.no_grad():
                expected, weights = layer(x, return_weights=True)
            check_close(tensor(student(x), f"y {where}"), expected, atol=1e-5, name=f"y {where}", dims=Y_DIMS,
                        likely=_layer_mistakes(layer, x))
            r = student(x, return_weights=True)
            y, w = pair(r, f"LocalAttention2d.forward(x, return_weights=True) {where}")
            check_close(tensor(y, f"y {where}"), expected, atol=1e-5, name=f"y with return_weights=True {where}",
                        dims=Y_DIMS)
            check_close(tensor(w, f"weights {where}"), weights, atol=1e-5, name=f"weights {where}", dims=W_DIMS,
                        hint="return local_attention's weights, (B, heads, H, W, K, K)")


@check("grade_layer", "K = 1 is the value projection; a shifted image gives a shifted output away from the borders; "
                      "with chunk the largest tensor is one slab's (nothing patches the meter); gradients of the input "
                      "and every parameter equal the reference's; no course.local_attention")
@owns("LocalAttention2d")
def layer_properties(h):
    with seeded(611):
        one, x1 = ref.LocalAttention2d(5, 6, kernel_size=1, heads=3).eval(), torch.randn(2, 5, 4, 3)
        layer = ref.LocalAttention2d(4, 8, kernel_size=3, heads=2).eval()
        big = torch.randn(1, 4, 8, 9)
        chunked = ref.LocalAttention2d(8, 8, kernel_size=5, heads=2, chunk=2).eval()
        xc = torch.randn(1, 8, 16, 16)
        xg, g = torch.randn(2, 4, 5, 6), torch.randn(2, 8, 5, 6)
    with h.substituted(**REF_FUNCTIONS):
        student = module(h, "LocalAttention2d", 5, 6, kernel_size=1, heads=3, state=one.state_dict())
        with torch.no_grad():
            check_close(tensor(student(x1), "y (K=1)"), one.v_proj(x1), atol=1e-5,
                        name="y of LocalAttention2d(5, 6, kernel_size=1, heads=3): each pixel attends to itself "
                             "alone, so y = v_proj(x)", dims=Y_DIMS)
        student = module(h, "LocalAttention2d", 4, 8, kernel_size=3, heads=2, state=layer.state_dict())
        s, t = 1, 2
        y = tensor(student(torch.cat([big[..., :7, :7], big[..., s:, t:]])), "y")
        _check_shifted(y[0], y[1], s, t, slice(1, 7 - 1 - s), slice(1, 7 - 1 - t), "y",
                       "(LocalAttention2d(4, 8, kernel_size=3, heads=2) on two crops of one image)")
        check_module_grads(student, layer, (xg,), g, "LocalAttention2d(4, 8, kernel_size=3, heads=2)")
        student = module(h, "LocalAttention2d", 8, 8, kernel_size=5, heads=2, chunk=2, state=chunked.state_dict())
        _no_tampering(h)
        _, largest = _metered(h, lambda: student(xc))
    U = _unfolded_bytes(1, 2, 4, 16, 16, 5)
    if largest > LARGEST_MAX * U:
        raise AssertionError(f"chunk ignored: LocalAttention2d(8, 8, kernel_size=5, heads=2, chunk=2) unfolds the "
                             f"whole 16x16 image at once (its largest tensor is {largest / U:.2f} x the whole "
                             "image's unfolded keys): with chunk given, call local_attention_chunked")
    _no_reference(h, "layer")


# ==================================================================================================
# 5. the non-local block
# ==================================================================================================
NL_KEYS = ("theta.weight", "phi.weight", "g.weight", "W_z.weight", "bn.weight", "bn.bias", "bn.running_mean",
           "bn.running_var")


def _non_local(state: dict, x: torch.Tensor, training: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """x + BN(W_z(softmax(theta^T phi) g)) computed from the weights ``state`` (the grade cell's formula)."""
    B, C, H, W = x.shape
    theta, phi, g = (F.conv2d(x, state[f"{m}.weight"], state.get(f"{m}.bias")).flatten(2)
                     for m in ("theta", "phi", "g"))
    f = (theta.transpose(1, 2) @ phi).softmax(-1)
    y = (f @ g.transpose(1, 2)).transpose(1, 2).reshape(B, -1, H, W)
    z = F.conv2d(y, state["W_z.weight"], state.get("W_z.bias"))
    return x + F.batch_norm(z, state["bn.running_mean"].clone(), state["bn.running_var"].clone(), state["bn.weight"],
                            state["bn.bias"], training=training, eps=eps)


@check("grade_non_local", "a new block is the identity; with bn.weight = 1, z = x + BN(W_z(softmax(theta^T phi) g)) "
                          "on (2, 6, 3, 4) (the visible tests)", mirrors_visible=True)
def non_local_visible(h):
    seed_kernel(h, 5)
    block = h.construct("NonLocalBlock", 6).eval()
    x = tensor(h.library("torch.randn")(2, 6, 3, 4), "x")
    check_close(tensor(block(x), "z"), x, atol=1e-6, rtol=1e-5,
                name="a new NonLocalBlock should be the identity (BN scale 0)",
                dims=Y_DIMS)
    state = _state(h, block, "NonLocalBlock", NL_KEYS)
    state["bn.weight"] = torch.ones_like(state["bn.weight"])
    load_weights(block, state, "NonLocalBlock")
    with torch.no_grad():
        expected = _non_local(state, x)
    check_close(tensor(block(x), "z"), expected, atol=1e-5, rtol=1e-5,
                name="z vs x + BN(W_z(softmax(theta^T phi) g))", dims=Y_DIMS)


def _bn_random(block: nn.Module) -> nn.Module:
    """A reference block whose BN is not the identity's zero (scale, shift and running statistics drawn)."""
    with torch.no_grad():
        block.bn.weight.copy_(1 + 0.5 * torch.randn_like(block.bn.weight))
        block.bn.bias.copy_(0.3 * torch.randn_like(block.bn.bias))
        block.bn.running_mean.copy_(0.2 * torch.randn_like(block.bn.running_mean))
        block.bn.running_var.copy_(0.5 + torch.rand_like(block.bn.running_var))
    return block


def _non_local_mistakes(block: ref.NonLocalBlock, x: torch.Tensor) -> dict:
    with torch.no_grad():
        B, C, H, W = x.shape
        theta, phi, g = (getattr(block, m)(x).flatten(2) for m in ("theta", "phi", "g"))

        def finish(f, gg=g):
            y = (f @ gg.transpose(1, 2)).transpose(1, 2).reshape(B, -1, H, W)
            return x + block.bn(block.W_z(y))

        logits = theta.transpose(1, 2) @ phi
        return {"a softmax over the queries (dim 1): each row i must sum to 1 over the positions j": finish(
                    logits.softmax(1)),
                "logits scaled by 1/sqrt(inner): the embedded Gaussian has no scale": finish(
                    (logits / math.sqrt(theta.shape[1])).softmax(-1)),
                "theta and phi swapped: f = softmax(theta(x)^T phi(x)), queries from theta": finish(
                    (phi.transpose(1, 2) @ theta).softmax(-1)),
                "no residual: z = x + BN(W_z(y))": finish(logits.softmax(-1)) - x,
                "values from theta or phi instead of g": finish(logits.softmax(-1), theta)}


NL_CASES = [(6, None, (2, 3, 4)), (8, 3, (1, 5, 2)), (4, None, (3, 2, 6))]  # channels, inner, x (B, H, W)


@check("grade_non_local", "a new block is the identity in eval and training mode (bn.weight zero-initialised); "
                          "equals the reference block with the same weights (BN not the identity, inner given or not, "
                          "non-square), in eval and training mode")
@owns("NonLocalBlock")
def non_local_values(h):
    for C, inner, size in ((6, None, (2, 5, 3)), (5, 2, (1, 2, 7))):
        student = h.construct("NonLocalBlock", C, *([inner] if inner else []))
        x = torch.randn(size[0], C, *size[1:], generator=torch.Generator().manual_seed(C))
        for train in (False, True):
            z = tensor(student.train(train)(x), "z")
            if not torch.allclose(z, x, atol=1e-6):
                bn = student.state_dict().get("bn.weight")
                why = ("bn.weight is not zero-initialised: nn.init.zeros_(self.bn.weight) makes the new block the "
                       "identity" if isinstance(bn, torch.Tensor) and bool((bn != 0).any()) else
                       "z should be x + BN(...) with the BN's scale 0")
                raise AssertionError(f"a new NonLocalBlock({C}) in {'training' if train else 'eval'} mode is not "
                                     f"the identity: {why}")
        state = student.state_dict()
        bn, wz = state.get("bn.weight"), state.get("W_z.weight")
        if isinstance(bn, torch.Tensor) and isinstance(wz, torch.Tensor) and bool((bn != 0).any() or (wz == 0).all()):
            raise AssertionError(f"a new NonLocalBlock({C}) is the identity some other way than the text's: zero "
                                 "only the BN's scale (nn.init.zeros_(self.bn.weight)) and keep W_z's default "
                                 "initialisation (a zero W_z feeds the BN a constant: its gradient is scaled by "
                                 "1/sqrt(eps) in training mode)")
    cases = drawn(701, len(NL_CASES), lambda t: (_bn_random(ref.NonLocalBlock(NL_CASES[t][0], NL_CASES[t][1])),
                                                 torch.randn(NL_CASES[t][2][0], NL_CASES[t][0], *NL_CASES[t][2][1:])))
    for (C, inner, _), (block, x) in zip(NL_CASES, cases):
        where = f"(NonLocalBlock({C}{f', inner={inner}' if inner else ''}), x {tuple(x.shape)})"
        student = h.construct("NonLocalBlock", C, *([inner] if inner else []))
        _same_weights(h, student, block, "NonLocalBlock")
        for train in (False, True):
            block.train(train)
            student.train(train)
            with torch.no_grad():
                expected, likely = block(x), _non_local_mistakes(block, x)
            check_close(tensor(student(x), f"z {where}"), expected, atol=1e-5, dims=Y_DIMS,
                        name=f"z in {'training' if train else 'eval'} mode {where}", likely=likely)


@check("grade_non_local", "gradients of the input and every parameter (theta, phi, g, W_z, bn) equal the reference's; "
                          "no course.local_attention")
@owns("NonLocalBlock")
def non_local_gradients(h):
    with seeded(711):
        block = _bn_random(ref.NonLocalBlock(6)).eval()
        x, g = torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    student = h.construct("NonLocalBlock", 6)
    _same_weights(h, student, block, "NonLocalBlock")
    student.eval()
    check_module_grads(student, block, (x,), g, "NonLocalBlock(6)")
    _no_reference(h, "non_local")


# ==================================================================================================
# 6. the ResNet (graded with the reference LocalAttention2d and NonLocalBlock)
# ==================================================================================================
REF_LAYERS = dict(LocalAttention2d=REF + "LocalAttention2d", NonLocalBlock=REF + "NonLocalBlock")
_HOLDERS = ("LocalAttention2d", "NonLocalBlock")  # the references: their inner names are fixed


def _keyed(name: str, shape: tuple, types: dict[str, str]) -> torch.Tensor | None:
    """The weight of parameter or buffer ``name`` from what it is, not where it sits: (the reference layer it belongs
    to and its name there, or its module's type and its own name, and its shape). Two networks of the same design get
    the same weights whatever they name their submodules; None keeps the module's own value."""
    parts = name.split(".")
    key, kind = None, types.get(".".join(parts[:-1]), "?")
    for i in range(len(parts) - 1, 0, -1):
        if types.get(".".join(parts[:i])) in _HOLDERS:
            key = (types[".".join(parts[:i])], ".".join(parts[i:]))
            break
    leaf = parts[-1]
    if leaf == "num_batches_tracked":
        return None
    if key is None and kind == "Conv2d" and leaf == "bias":
        return torch.zeros(shape)  # the design's convolutions have no bias (before a BN): an extra one is harmless
    g = torch.Generator().manual_seed(zlib.crc32(repr((key or (kind, leaf), shape)).encode()))
    is_bn = kind == "BatchNorm2d"
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if is_bn and leaf == "weight":
        return 1 + 0.3 * torch.randn(shape, generator=g)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return 0.3 * torch.randn(shape, generator=g)


def _keyed_state(state: dict, types: dict[str, str]) -> dict:
    out = {}
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            value = _keyed(name, tuple(t.shape), types)
            out[name] = t if value is None else value.to(t.dtype)
    return out


def _types_here(m: nn.Module) -> dict[str, str]:
    return {n: type(s).__name__ for n, s in m.named_modules()}


def _types_there(h, obj: RemoteObject) -> dict[str, str]:
    mods = h.library("builtins.dict")(obj.call_method("named_modules"))
    if not isinstance(mods, dict):
        raise AssertionError(f"named_modules() of your module gave {what(mods)}")
    return {n: getattr(m, "type_name", "?") for n, m in mods.items()}


def _keyed_reference(m: nn.Module) -> nn.Module:
    m.load_state_dict(_keyed_state(m.state_dict(), _types_here(m)))
    return m


def _keyed_student(h, obj: RemoteObject, name: str) -> tuple[dict, dict[str, str]]:
    """Give the student's module the keyed weights of its design; returns (its state, its module types)."""
    types = _types_there(h, obj)
    state = obj.state_dict()
    load_weights(obj, _keyed_state(state, types), name)
    return state, types


def _design(state: dict, types: dict[str, str]) -> dict[str, int]:
    """What a network is made of: 3x3 convolutions, LocalAttention2d and NonLocalBlock layers, BatchNorm2d outside
    them, parameters (biases of convolutions outside the reference layers left out: a conv before a BN needs none)."""
    out = {"3x3 convolutions": 0, "LocalAttention2d": 0, "NonLocalBlock": 0, "BatchNorm2d": 0, "parameters": 0}
    inner = [n for n, t in types.items() if t in _HOLDERS]
    for n, t in types.items():
        if t in _HOLDERS or (t == "BatchNorm2d" and not any(n.startswith(i + ".") for i in inner)):
            out[t] += 1
    for name, t in state.items():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if not isinstance(t, torch.Tensor) or "running" in name or "num_batches" in name:
            continue
        inside = any(types.get(".".join(name.split(".")[:i])) in _HOLDERS for i in range(1, name.count(".") + 1))
        if types.get(owner) == "Conv2d" and name.endswith(".weight") and t.dim() == 4 and tuple(t.shape[2:]) == (3, 3) \
                and not inside:
            out["3x3 convolutions"] += 1
        if not (types.get(owner) == "Conv2d" and name.endswith(".bias") and not inside):
            out["parameters"] += t.numel()
    return out


def _named_first(y: Any, expected: torch.Tensor, likely: dict, name: str) -> None:
    """When ``y`` is not ``expected`` but one of the ``likely`` mistakes, say which (before the design is compared:
    such a mistake may change the parts too)."""
    if not (isinstance(y, torch.Tensor) and y.shape == expected.shape) or \
            torch.allclose(y, expected, atol=1e-4, rtol=1e-4):
        return
    for label, alt in likely.items():
        if alt.shape == y.shape and torch.allclose(y, alt, atol=1e-4, rtol=1e-4):
            raise AssertionError(f"{name} looks like {label}")


def _check_design(got: dict, expected: dict, what_: str) -> None:
    for part in ("3x3 convolutions", "LocalAttention2d", "NonLocalBlock", "BatchNorm2d", "parameters"):
        if got[part] != expected[part]:
            parts = ", ".join(f"{v} {k}" for k, v in got.items()) + " (biases of convolutions before a BN not counted)"
            raise AssertionError(f"{what_} has {got[part]} {part}, the design of the text {expected[part]} "
                                 f"(yours: {parts})" + (": the attention blocks have no 3x3 convolution"
                                                        if part == "3x3 convolutions" and "attention" in what_ else
                                                        ": a BN after the stem's convolution and after each mixer, "
                                                        "one in each projection shortcut" if part == "BatchNorm2d"
                                                        else ""))


@check("grade_resnet", "ResBlock(4, 8, stride=2) (conv and attention) halves (6, 6); ResNet logits (2, 10); 4 "
                       "LocalAttention2d and one NonLocalBlock (the visible tests)", mirrors_visible=True)
def resnet_visible(h):
    with h.substituted(**REF_LAYERS):
        seed_kernel(h, 6)
        for mixer in ("conv", "attention"):
            block = h.construct("ResBlock", 4, 8, stride=2, mixer=mixer, kernel_size=3, heads=2).eval()
            y = block(h.library("torch.randn")(2, 4, 6, 6))
            if not (isinstance(y, torch.Tensor) and tuple(y.shape) == (2, 8, 3, 3)):
                raise AssertionError(f"ResBlock(4, 8, stride=2, mixer={mixer!r}) shape")
        net = h.construct("ResNet", widths=(8, 16), depths=(1, 1), mixer="attention", kernel_size=3, heads=2,
                          non_local=1).eval()
        y = net(h.library("torch.randn")(2, 3, 8, 8))
        if not (isinstance(y, torch.Tensor) and tuple(y.shape) == (2, 10)):
            raise AssertionError("ResNet logits should be (B, num_classes)")
        kinds = list(_types_there(h, net).values())
    if not (kinds.count("LocalAttention2d") == 4 and kinds.count("NonLocalBlock") == 1):
        raise AssertionError("the attention ResNet should have 2 LocalAttention2d per block and one NonLocalBlock "
                             "after stage 1")


def _forward(student: RemoteObject, x: torch.Tensor, where: str, halves: bool, mixer: str) -> Any:
    """``student(x)``; a size mismatch where a block halves the size is named."""
    try:
        return student(x)
    except StudentError as e:
        if halves and re.search(r"size of tensor a \(\d+\) must match", e.message or ""):
            raise AssertionError(f"{where} fails to add a stride-2 block's shortcut (a size mismatch): "
                                 + ("the attention path keeps H x W (LocalAttention2d has no stride): pool it with "
                                    "2x2 average pooling (nn.AvgPool2d(2)) after the attention" if mixer == "attention"
                                    else "both paths must halve the size: stride 2 in the first 3x3 convolution, "
                                         "2x2 average pooling in the shortcut")) from None
        raise


def _block_mistakes(blk: ref.ResBlock, x: torch.Tensor, stride: int, mixer: str) -> dict:
    with torch.no_grad():
        sc = blk.shortcut(x)
        main = blk.bn2(blk.mix2(F.relu(blk.bn1(blk.mix1(x)))))
        found = {"no shortcut: add the input (or its projection) before the last ReLU": F.relu(main),
                 "no ReLU after the sum: relu(bn2(...) + shortcut(x))": main + sc,
                 "ReLU before adding the shortcut: relu(bn2(...) + shortcut(x))": F.relu(main) + sc}
        if stride == 2 and mixer == "attention":
            attn = blk.mix1[0]
            for label, first in (("2x2 average pooling before the attention: attend at full resolution, then pool",
                                  attn(F.avg_pool2d(x, 2))),
                                 ("stride 2 by subsampling (x[..., ::2, ::2]) after the attention: average-pool it "
                                  "(nn.AvgPool2d(2))", attn(x)[..., ::2, ::2])):
                found[label] = F.relu(blk.bn2(blk.mix2(F.relu(blk.bn1(first)))) + sc)
        if stride == 2:
            conv, bn = blk.shortcut[1], blk.shortcut[2]
            found["a shortcut that subsamples (a stride-2 1x1 convolution): 2x2 average pooling, then the 1x1 "
                  "convolution"] = F.relu(main + bn(F.conv2d(x, conv.weight, stride=2)))
    return found


BLOCK_CASES = [(4, 8, 2, "attention", (2, 6, 6), 3), (4, 8, 2, "conv", (2, 6, 4), 5), (8, 8, 1, "attention", (2, 5, 4), 5),
               (4, 8, 1, "conv", (1, 4, 5), 5)]
# in, out, stride, mixer, x (B, H, W), kernel_size (the attention's window: a conv block is 3x3 whatever it is); the
# stride-2 blocks (a BN in each path) are compared in training mode too. Few cases: each costs ~12 round trips to the
# kernel (5-7 ms each) and a grade cell must stay under 2 s on a loaded 2-core machine.


@check("grade_resnet", "ResBlock equals the design of the text with the same weights (conv and attention, stride 1 "
                       "and 2, C_in = C_out or not; eval mode, and training mode at stride 2): residual shortcut (pooled 1x1 projection "
                       "when the shape changes), 2x2 average pooling after the attention for stride 2, 3x3 "
                       "convolutions only in conv blocks")
@owns("ResBlock", "ResNet", "_spatial")
def resnet_blocks(h):
    xs = drawn(801, len(BLOCK_CASES), lambda t: torch.randn(BLOCK_CASES[t][4][0], BLOCK_CASES[t][0],
                                                            *BLOCK_CASES[t][4][1:]))
    for (C_in, C_out, stride, mixer, _, K), x in zip(BLOCK_CASES, xs):
        where = f"ResBlock({C_in}, {C_out}, stride={stride}, mixer={mixer!r}, kernel_size={K}, heads=2)"
        blk = _keyed_reference(ref.ResBlock(C_in, C_out, stride, mixer, K, 2))
        with h.substituted(**REF_LAYERS):
            student = h.construct("ResBlock", C_in, C_out, stride=stride, mixer=mixer, kernel_size=K, heads=2)
        state, types = _keyed_student(h, student, "ResBlock")
        design = _design(state, types), _design(blk.state_dict(), _types_here(blk))
        for train in (False, True)[:1 + (stride == 2)]:
            blk.train(train)
            student.train(train)
            with torch.no_grad():
                expected, likely = blk(x), _block_mistakes(blk, x, stride, mixer)
            y = tensor(_forward(student, x, where, stride == 2, mixer), f"{where} output")
            _named_first(y, expected, likely, f"{where} output")
            _check_design(*design, where)
            check_close(y, expected, atol=1e-4, rtol=1e-4, dims=Y_DIMS, likely=likely,
                        name=f"{where} output in {'training' if train else 'eval'} mode (the same weights)",
                        hint="relu(bn2(mix2(relu(bn1(mix1(x))))) + shortcut(x)), the shortcut (2x2 average pooling "
                             "and) a 1x1 convolution with BN when the shape changes")


NET_CASES = [dict(widths=(8, 16), depths=(1, 2), mixer="attention", non_local=1, x=(2, 8, 8), kernel_size=3),
             dict(widths=(4, 8, 8), depths=(2, 1, 1), mixer="conv", non_local=None, x=(2, 16, 8), kernel_size=5)]
# depth 2 in the first stage (no stride) and in a later one (stride at its first block only); with and without the
# NonLocalBlock (the likely mistake: after another stage); a non-square input (its last map is 4 x 2)


@check("grade_resnet", "ResNet equals the design of the text with the same weights: a 3x3 conv stem, stride 2 at the "
                       "first block of each later stage, the NonLocalBlock after stage non_local, mean pooling and a "
                       "linear head; the same parts and parameter count; gradients reach every parameter; no "
                       "course.local_attention")
@owns("ResBlock", "ResNet", "_spatial")
def resnet_net(h):
    xs = drawn(811, len(NET_CASES), lambda t: torch.randn(NET_CASES[t]["x"][0], 3, *NET_CASES[t]["x"][1:]))
    first = None
    for case, x in zip(NET_CASES, xs):
        kw = dict(widths=case["widths"], depths=case["depths"], mixer=case["mixer"], kernel_size=case["kernel_size"],
                  heads=2, non_local=case["non_local"])
        where = f"ResNet({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
        net = _keyed_reference(ref.ResNet(**kw)).eval()
        with h.substituted(**REF_LAYERS):
            student = h.construct("ResNet", **kw)
        first = first or (student, x, where)
        state, types = _keyed_student(h, student, "ResNet")
        student.eval()
        likely = {}
        with torch.no_grad():
            expected = net(x)
            for s in range(len(case["widths"])):
                if case["non_local"] is not None and s != case["non_local"]:
                    other = _keyed_reference(ref.ResNet(**{**kw, "non_local": s})).eval()
                    likely[f"the NonLocalBlock after stage {s}: insert it after stage non_local="
                           f"{case['non_local']} (an index into widths)"] = other(x)
        try:
            y = tensor(_forward(student, x, where, len(case["widths"]) > 1, case["mixer"]), f"{where} logits")
        except StudentError as e:
            if x.shape[2] == x.shape[3]:
                raise
            raise AssertionError(f"{where} raised {e.type_name} on a non-square input {tuple(x.shape)}: nothing in the "
                                 "design needs H = W (the global pooling is the mean over H and W, x.mean((2, 3)))") \
                from None
        _named_first(y, expected, likely, f"{where} logits")
        _check_design(_design(state, types), _design(net.state_dict(), _types_here(net)), where)
        check_close(y, expected, atol=1e-4, rtol=1e-4, name=f"{where} logits "
                    "(the same weights, eval mode)", dims=("batch", "class"), likely=likely,
                    hint="the stem (3x3 conv, BN, ReLU), then each stage's blocks (stride 2 at the first block of "
                         "every stage but the first), the NonLocalBlock after stage non_local, the mean over H, W "
                         "and the linear head")
    student, x, where = first  # the attention net with a NonLocalBlock
    student.train()
    check_every_parameter_learns(h, student, x, grad_output=torch.randn(x.shape[0], 10), name=where)
    _no_reference(h, "resnet")
