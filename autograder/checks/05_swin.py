"""Hidden checks of assignment 05 (the Swin Transformer), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``05_swin.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs and expected values are made here, from
torchvision's ``shifted_window_attention``, ``PatchMerging``, ``SwinTransformerBlock`` and ``SwinTransformer``
(every parameter drawn at random, LayerNorms around 1; dropout 0; copies of the list arguments, which torchvision's
function edits), from explicit loops, and from the course's references (``course.swin``: the one home of the
solution, also used by the notebook's grade cells, and of the adapter that maps torchvision's names to the
notebook's). Conventions as in 04's checks:

- each exercise is graded with the references of the parts it builds on (``h.substituted``), so a mistake costs
  points once (``tests/mutants/05_swin/`` proves it);
- a check "(the visible tests)" repeats its grade cell's asserts exactly (same seeds, same calls, the same references
  substituted): it disagrees with the notebook's run only when something was tampered with;
- a failure message's first line says what is wrong and where; ``likely=`` names the classic mistake a result
  matches (windows in column order, the offset key minus query, the shift without its mask, the mask labelled
  before the roll, the roll not reversed, the 2 x 2 neighbourhood concatenated column first ...);
- the other checks run with course.swin's answer to the part forbidden (``owns``), the attention's and the
  network's also with torchvision's Swin forbidden (``_no_torchvision``), and no cell of the student's may import
  course.swin or copy its code (``_no_reference``); the adapters ``load_torchvision_weights`` and
  ``torchvision_names`` ship to students;
- sizes not divisible by the window (padding), maps no larger than one window (no shift), shifts of one axis;
- each grade cell's checks stay well under 2 s on a CPU (one torch thread, set by the check runner).
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import SwinTransformer
from torchvision.models.swin_transformer import PatchMerging as TorchvisionMerging
from torchvision.models.swin_transformer import SwinTransformerBlock as TorchvisionBlock
from torchvision.models.swin_transformer import shifted_window_attention as tv_attention

import course.swin as ref
from autograder.checkkit import Answers, check_parameters, drawn, load_weights, quiet, tensor
from autograder.trusted import StudentError, check
from course.testing import check_close, seeded

REF = "course.swin."
TV = "torchvision.models.swin_transformer."
MAP_DIMS = ("batch", "row", "column", "channel")
WIN_DIMS = ("window", "pixel", "channel")
MASK_DIMS = ("window", "query", "key")


def _warm_up() -> None:
    """What torchvision's Swin builds on first use: when the checks load, not in a cell."""
    with quiet(), torch.no_grad():
        SwinTransformer([2, 2], 4, [2], [1], [2, 2], stochastic_depth_prob=0.0, num_classes=2).eval()(
            torch.zeros(1, 3, 4, 4))


_warm_up()

ANSWERS = Answers("course.swin")
_no_reference, owns = ANSWERS.scan, ANSWERS.owns


@contextlib.contextmanager
def _no_torchvision(h) -> Iterator[None]:
    """torchvision's Swin raises in the student's kernel within the block (the checks compare with it, here)."""
    names = ("shifted_window_attention", "ShiftedWindowAttention", "PatchMerging", "SwinTransformerBlock",
             "SwinTransformer")
    try:
        with h.forbidden(*(TV + n for n in names)):
            yield
    except StudentError as e:
        hit = re.match(r"torchvision\.models\.swin_transformer\.(\w+) may not be used here", e.message or "")
        if hit and e.type_name == "RuntimeError":
            raise AssertionError(f"your code runs torchvision's {hit.group(1)}, what the checks compare with: "
                                 "write it yourself") from None
        raise


def _raises(h, name: str, call: str, *args, why: str) -> None:
    try:
        h.call(name, *args)
    except StudentError as e:
        if e.type_name != "ValueError":
            raise AssertionError(f"{call} raised {e.shown_type}, expected a ValueError ({why})") from None
    else:
        raise AssertionError(f"{call} should raise a ValueError ({why})")


def _drawn_linears(m: nn.Module) -> nn.Module:
    """Linear weights of unit gain (N(0, 1/fan_in)), biases random: torchvision's initial weights (std 0.02) make
    a block nearly the identity, where a misplaced shift changes the output by less than the tolerance."""
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, layer.in_features ** -0.5)
                if layer.bias is not None:
                    layer.bias.normal_(0.0, 0.1)
    return m


def _drawn_norms(m: nn.Module) -> nn.Module:
    """LayerNorms with random scales and shifts, biases random: the defaults (1, 0) would hide a misplaced norm."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0.0, 0.3)
            elif "relative_position_bias_table" in name:
                p.normal_(0.0, 1.0)
    return m


# ==================================================================================================
# 1. windows
# ==================================================================================================
def _windows_loops(x: torch.Tensor, M: int, order: str = "raster") -> torch.Tensor:
    B, H, W, C = x.shape
    out = []
    for b in range(B):
        grid = [(r, c) for r in range(H // M) for c in range(W // M)]
        if order == "columns":
            grid = sorted(grid, key=lambda rc: (rc[1], rc[0]))
        for r, c in grid:
            w = x[b, r * M:(r + 1) * M, c * M:(c + 1) * M]
            out.append((w.transpose(0, 1) if order == "transposed" else w).reshape(M * M, C))
    return torch.stack(out)


def _window_mistakes(x: torch.Tensor, M: int) -> dict:
    B, H, W, C = x.shape
    return {"the windows in column order: raster order goes along a row of windows first (window r * W/M + c)":
            _windows_loops(x, M, "columns"),
            "the pixels of a window column by column: pixel (i, j) is token i * M + j":
                _windows_loops(x, M, "transposed"),
            "a reshape without a permute: x.reshape(B * nW, M * M, C) mixes the pixels of different windows":
                x.reshape(-1, M * M, C)}


@check("grade_windows", "window_partition(x [2, 8, 12, 3], 4): shape (12, 16, 3), windows 2 and 10; window_reverse "
                        "undoes it (the visible tests)", mirrors_visible=True)
def windows_visible(h):
    with seeded(1):
        x = torch.randn(2, 8, 12, 3)
    win = tensor(h.call("window_partition", x, 4), "windows")
    if tuple(win.shape) != (12, 16, 3):
        raise AssertionError(f"window_partition(x [2, 8, 12, 3], 4): shape {tuple(win.shape)}, expected (12, 16, 3)")
    if not torch.equal(win[2], x[0, 0:4, 8:12].reshape(16, 3)):
        raise AssertionError("window 2 should be the one at window row 0, column 2 (raster order), its pixels row by row")
    if not torch.equal(win[10], x[1, 4:8, 4:8].reshape(16, 3)):
        raise AssertionError("window 10 is image 1's window (1, 1)")
    if not torch.equal(tensor(h.call("window_reverse", win, 4, 8, 12), "window_reverse"), x):
        raise AssertionError("window_reverse should undo window_partition")


WINDOW_CASES = [(2, 8, 12, 3, 4, torch.float32), (1, 6, 9, 2, 3, torch.float64), (3, 4, 4, 1, 1, torch.float32),
                (1, 5, 5, 4, 5, torch.float32), (2, 14, 7, 5, 7, torch.float64), (1, 12, 4, 2, 2, torch.float32)]


@check("grade_windows", "window_partition equals explicit loops exactly on random sizes (H != W, M = 1, M = H, C = 1 "
                        "to 5, float64) and window_reverse undoes it; a map that is not a whole number of windows "
                        "raises a ValueError; no course.swin")
@owns("window_partition", "window_reverse")
def windows_random(h):
    xs = drawn(101, len(WINDOW_CASES), lambda t: torch.randn(*WINDOW_CASES[t][:4], dtype=WINDOW_CASES[t][5]))
    for (B, H, W, C, M, dtype), x in zip(WINDOW_CASES, xs):
        where = f"(x [{B}, {H}, {W}, {C}], window {M}{', float64' if dtype == torch.float64 else ''})"
        got = tensor(h.call("window_partition", x, M), f"window_partition {where}", dtype=dtype, why=" like the map")
        check_close(got, _windows_loops(x, M), atol=0.0, rtol=0.0, name=f"window_partition {where}", dims=WIN_DIMS,
                    likely=_window_mistakes(x, M), hint="view(B, H/M, M, W/M, M, C), permute(0, 1, 3, 2, 4, 5), "
                                                        "reshape(-1, M * M, C)")
        back = tensor(h.call("window_reverse", _windows_loops(x, M), M, H, W), f"window_reverse {where}")
        check_close(back, x, atol=0.0, rtol=0.0, name=f"window_reverse of the windows of {where}", dims=MAP_DIMS,
                    likely={"the windows put back in column order": ref.window_reverse(
                        _windows_loops(x, M, "columns"), M, H, W)} if H != W or B > 1 else None)
    _raises(h, "window_partition", "window_partition(x [1, 6, 8, 2], 4)", torch.zeros(1, 6, 8, 2), 4,
            why="6 rows are not a whole number of windows of 4")
    _no_reference(h, "windows")


# ==================================================================================================
# 2. relative position index
# ==================================================================================================
def _index_loops(M: int, sign: int = 1, stride: int | None = None, swap: bool = False) -> torch.Tensor:
    stride = 2 * M - 1 if stride is None else stride
    out = torch.empty(M * M, M * M, dtype=torch.long)
    for i in range(M * M):
        for j in range(M * M):
            dy, dx = sign * (i // M - j // M), sign * (i % M - j % M)
            if swap:
                dy, dx = dx, dy
            out[i, j] = (dy + M - 1) * stride + (dx + M - 1)
    return out


@check("grade_relative_position", "relative_position_index(3): a LongTensor (9, 9); entries (0, 0), (4, 4), (8, 0), "
                                  "(0, 8), (1, 3) (the visible tests)", mirrors_visible=True)
def index_visible(h):
    idx = h.call("relative_position_index", 3)
    if not (isinstance(idx, torch.Tensor) and tuple(idx.shape) == (9, 9) and idx.dtype == torch.long):
        raise AssertionError("relative_position_index(3): a LongTensor (9, 9)")
    if not (int(idx[0, 0]) == 12 and int(idx[4, 4]) == 12):
        raise AssertionError("offset (0, 0) is row (M-1)(2M-1) + M-1 = 12 of the table for M = 3")
    if not (int(idx[8, 0]) == 24 and int(idx[0, 8]) == 0):
        raise AssertionError("query (2, 2) and key (0, 0): offset (+2, +2), row 24; the reverse, row 0")
    if int(idx[1, 3]) != 8:
        raise AssertionError("query (0, 1), key (1, 0): offset (-1, +1), row (dy + 2) * 5 + (dx + 2) = 8")


@check("grade_relative_position", "equals the loops (dy + M - 1)(2M - 1) + (dx + M - 1) of (query - key) for M = 1 "
                                  "to 7, a LongTensor that indexes torchvision's bias table to its bias; no "
                                  "course.swin")
@owns("relative_position_index")
def index_random(h):
    for M in range(1, 8):
        got = h.call("relative_position_index", M)
        if not (isinstance(got, torch.Tensor) and got.dtype == torch.long):
            raise AssertionError(f"relative_position_index({M}) should be a LongTensor (it indexes the table), got "
                                 f"{getattr(got, 'dtype', type(got).__name__)}")
        likely = {"key minus query: the offset is the query's position minus the key's": _index_loops(M, -1),
                  "the row offset times 2M instead of 2M - 1": _index_loops(M, stride=2 * M),
                  "the row offset times M instead of 2M - 1": _index_loops(M, stride=M),
                  "(dx, dy) instead of (dy, dx): the row offset goes first": _index_loops(M, swap=True),
                  "the offsets not shifted by M - 1 (negative rows)": _index_loops(M) - (M - 1) * (2 * M)}
        check_close(got.float(), _index_loops(M).float(), atol=0.0, rtol=0.0, name=f"relative_position_index({M})",
                    dims=("query", "key"), likely={k: v.float() for k, v in likely.items() if M > 1},
                    hint="(dy + M - 1) * (2M - 1) + (dx + M - 1), (dy, dx) = query - key")
    _no_reference(h, "relative_position")


# ==================================================================================================
# 3. the shift mask
# ==================================================================================================
def _mask_labels(lab: torch.Tensor, M: int) -> torch.Tensor:
    win = ref.window_partition(lab[None, :, :, None].float(), M)[..., 0]
    return torch.where(win[:, :, None] == win[:, None, :], 0.0, ref.MASKED)


def _mask_mistakes(H: int, W: int, M: int, sy: int, sx: int) -> dict:
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    before = 2 * ((i < sy) if sy else torch.zeros_like(i)).long() + ((j < sx) if sx else torch.zeros_like(j)).long()
    rolled_wrong = 2 * (i >= H - M).long() * bool(sy) + (j >= W - M).long() * bool(sx)
    found = {"no mask at all (zeros)": torch.zeros((H // M) * (W // M), M * M, M * M),
             "the regions labelled on the map before the roll (its first s rows and columns): label the rolled map, "
             "whose last s rows and columns wrapped round": _mask_labels(before, M),
             "two regions per axis split at H - M: the three ranges are [0, H-M), [H-M, H-s), [H-s, H)":
                 _mask_labels(rolled_wrong, M)}
    if sy != sx and sy and sx:
        found["the row shift used for the columns too: shift is (rows, columns)"] = ref.shift_mask(H, W, M, sy)
    found["-inf instead of -100 (torchvision's value; -inf gives NaN where a row is all masked)"] = None
    return {k: v for k, v in found.items() if v is not None}


@check("grade_shift_mask", "shift_mask(8, 8, 4, 2): shape (4, 16, 16), window 0 unmasked, the pairs of windows 1 "
                           "and 3 (the visible tests)", mirrors_visible=True)
def mask_visible(h):
    with h.substituted(window_partition=REF + "window_partition"):
        mask = tensor(h.call("shift_mask", 8, 8, 4, 2), "mask")
    if tuple(mask.shape) != (4, 16, 16):
        raise AssertionError(f"shift_mask(8, 8, 4, 2): shape {tuple(mask.shape)}, expected (4, 16, 16)")
    if mask[0].abs().sum() != 0:
        raise AssertionError("window 0 of the rolled map holds pixels of one region: nothing masked")
    if not (float(mask[1, 0, 1]) == 0 and float(mask[1, 0, 2]) == ref.MASKED):
        raise AssertionError("window 1 (top right): pixels (0, 0) and (0, 1) of the window share a region, (0, 0) and "
                             "(0, 2) do not")
    if not (float(mask[3, 0, 10]) == ref.MASKED and float(mask[3, 10, 15]) == 0):
        raise AssertionError("window 3 holds four regions of 2 x 2")


MASK_CASES = [(8, 8, 4, 2), (8, 12, 4, 2), (12, 6, 3, 1), (14, 7, 7, 3), (9, 9, 3, (1, 0)), (8, 8, 4, (0, 2)),
              (10, 15, 5, (2, 1)), (4, 8, 4, 2), (6, 6, 2, 1)]


@check("grade_shift_mask", "equals the regions of the rolled map pixel by pixel (-100 between regions, 0 within) on "
                           "random sizes (H != W, one row of windows, M = 2 to 7, shifts of one axis, (rows, columns) "
                           "pairs, the shift 0 of an axis); no course.swin")
@owns("shift_mask")
def mask_random(h):
    for H, W, M, shift in MASK_CASES:
        sy, sx = (shift, shift) if isinstance(shift, int) else shift
        i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        lab = 2 * ((i >= H - sy) & (sy > 0)).long() + ((j >= W - sx) & (sx > 0)).long()
        where = f"shift_mask({H}, {W}, {M}, {shift})"
        with h.substituted(window_partition=REF + "window_partition"):
            got = tensor(h.call("shift_mask", H, W, M, shift), where)
        if got.dtype.is_floating_point and bool(torch.isinf(got).any()):
            raise AssertionError(f"{where}: -inf between regions: use -100 (torchvision's value), which never makes a "
                                 "NaN after the softmax")
        check_close(got, _mask_labels(lab, M), atol=0.0, rtol=0.0, name=where, dims=MASK_DIMS,
                    likely=_mask_mistakes(H, W, M, sy, sx),
                    hint="label the ranges [0, H-M), [H-M, H-s), [H-s, H) of each rolled axis, window_partition the "
                         "labels, -100 where two labels differ")
    _no_reference(h, "shift_mask")


# ==================================================================================================
# 4. (shifted) window attention (graded with the reference windows, index and mask)
# ==================================================================================================
REF_WINDOWS = {n: REF + n for n in ("window_partition", "window_reverse", "relative_position_index", "shift_mask")}


def _weights(C: int, M: int, heads: int, biases: bool = True) -> dict:
    """As the notebook's window_weights (the same draws, in the same order)."""
    w = dict(qkv=torch.randn(3 * C, C) / C ** 0.5, proj=torch.randn(C, C) / C ** 0.5,
             qkv_b=torch.randn(3 * C) * 0.1, proj_b=torch.randn(C) * 0.1, table=torch.randn((2 * M - 1) ** 2, heads))
    if not biases:
        w["qkv_b"] = w["proj_b"] = None
    return w


def _tv(x: torch.Tensor, w: dict, M: int, heads: int, shift: int, table: torch.Tensor | None = None,
        index: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's shifted_window_attention (copies of the list arguments: it edits shift_size)."""
    table = w["table"] if table is None else table
    index = ref.relative_position_index(M) if index is None else index
    bias = table[index.flatten()].view(M * M, M * M, heads).permute(2, 0, 1)[None]
    with torch.no_grad():
        return tv_attention(x, w["qkv"], w["proj"], bias, [M, M], heads, [shift, shift], 0.0, 0.0, w["qkv_b"],
                            w["proj_b"], training=False)


def _attention_mistakes(x: torch.Tensor, w: dict, M: int, heads: int, shift: int) -> dict:
    H, W = x.shape[1:3]
    found = {"no relative position bias": _tv(x, w, M, heads, shift, table=torch.zeros_like(w["table"])),
             "the bias indexed with key minus query (the table read backwards)":
                 _tv(x, w, M, heads, shift, index=ref.relative_position_index(M).T)}
    if shift and H % M == 0 and W % M == 0 and M < H and M < W:
        rolled = torch.roll(x, (-shift, -shift), (1, 2))
        inner = _tv(rolled, w, M, heads, 0)
        found["the shift without its mask: the pixels the roll brought together attend to each other"] = \
            torch.roll(inner, (shift, shift), (1, 2))
        expected = _tv(x, w, M, heads, shift)
        found["the shift not reversed: roll the output back by +shift"] = torch.roll(expected, (-shift, -shift), (1, 2))
        found["the map rolled by +shift first (and back by -shift): roll by -shift, then back"] = torch.roll(
            _tv(torch.roll(x, (2 * shift, 2 * shift), (1, 2)), w, M, heads, shift), (-2 * shift, -2 * shift), (1, 2))
        found["no shift at all"] = _tv(x, w, M, heads, 0)
    if shift and (H <= M) != (W <= M):
        found["no shift along either axis: only an axis no larger than the window is left unshifted, the other "
              "one still shifts"] = _tv(x, w, M, heads, 0)
    return found


@check("grade_window_attention", "8 x 8 (shift 0 and 2) and 6 x 10 (shift 2) maps equal torchvision's "
                                 "shifted_window_attention (the visible tests)", mirrors_visible=True)
def attention_visible(h):
    with seeded(2):
        cases = [(H, W, shift, torch.randn(2, H, W, 8), _weights(8, 4, 2)) for H, W, shift in
                 ((8, 8, 0), (8, 8, 2), (6, 10, 2))]
    with h.substituted(**REF_WINDOWS):
        for H, W, shift, x, w in cases:
            out = tensor(h.call("shifted_window_attention", x, w["qkv"], w["proj"], w["table"], 4, 2, shift,
                                w["qkv_b"], w["proj_b"]), "output")
            if tuple(out.shape) != (2, H, W, 8):
                raise AssertionError(f"shape {tuple(out.shape)}, expected (2, {H}, {W}, 8): the input's")
            if not torch.allclose(out, _tv(x, w, 4, 2, shift), atol=1e-5):
                raise AssertionError(f"differs from torchvision's shifted_window_attention ({H} x {W}, window 4, "
                                     f"shift {shift})")


ATTN_CASES = [  # B, H, W, C, M, heads, shift, biases: sizes not divisible by the window, a map of one window, no biases
    (2, 8, 8, 8, 4, 2, 2, True), (1, 9, 6, 12, 4, 3, 2, True), (2, 4, 4, 8, 4, 2, 2, True),
    (1, 12, 8, 8, 4, 2, 0, False), (1, 10, 14, 6, 3, 2, 1, True), (2, 5, 5, 4, 2, 1, 1, True),
    (1, 7, 7, 16, 7, 4, 3, False), (1, 12, 16, 8, 4, 4, 2, True),
    (1, 4, 12, 8, 4, 2, 2, True), (1, 10, 3, 6, 3, 2, 1, True)]  # one axis no larger than the window: only the other shifts


@check("grade_window_attention", "equals torchvision's shifted_window_attention (the same weights, dropout 0) on "
                                 "random sizes: maps not divisible by the window (padding), a map of one window (no "
                                 "shift), maps one window high or wide (only the other axis shifts), 1 to 4 heads, windows of 2 to 7, without biases; gradients reach x and "
                                 "the bias table; no course.swin")
@owns("shifted_window_attention")
def attention_random(h):
    cases = drawn(401, len(ATTN_CASES), lambda t: (torch.randn(*ATTN_CASES[t][:4]),
                                                   _weights(*ATTN_CASES[t][3:6], ATTN_CASES[t][7])))
    runs = [(case, x, w, _tv(x, w, case[4], case[5], case[6]), _attention_mistakes(x, w, case[4], case[5], case[6]))
            for case, (x, w) in zip(ATTN_CASES, cases)]
    with h.substituted(**REF_WINDOWS), _no_torchvision(h):
        for (B, H, W, C, M, heads, shift, biases), x, w, expected, likely in runs:
            where = (f"shifted_window_attention(x [{B}, {H}, {W}, {C}], window {M}, {heads} heads, shift {shift}"
                     + ("" if biases else ", no biases") + ")")
            got = tensor(h.call("shifted_window_attention", x, w["qkv"], w["proj"], w["table"], M, heads, shift,
                                w["qkv_b"], w["proj_b"]), where)
            check_close(got, expected, atol=1e-5, rtol=1e-4, name=where + " vs torchvision's", dims=MAP_DIMS,
                        likely=likely, hint="pad, roll by -shift, partition, softmax(QK^T / sqrt(d) + B + mask) V, "
                                            "project, reverse, roll by +shift, crop")
        (B, H, W, C, M, heads, shift, _), x, w, _, _ = runs[1]
        g = drawn(402, 1, lambda t: torch.randn(B, H, W, C))[0]
        grads = h.vjp("shifted_window_attention", (x, w["qkv"], w["proj"], w["table"], M, heads, shift, w["qkv_b"],
                                                   w["proj_b"]), (g,))
        leaf, table = x.clone().requires_grad_(), w["table"].clone().requires_grad_()
        ref.shifted_window_attention(leaf, w["qkv"], w["proj"], table, M, heads, shift, w["qkv_b"],
                                     w["proj_b"]).backward(g)
        for got, want, what in ((grads[0], leaf.grad, "the map x"), (grads[3], table.grad, "the bias table")):
            if got is None:
                raise AssertionError(f"shifted_window_attention (x {tuple(x.shape)}): no gradient reaches {what}: use torch operations only (no .detach(), "
                                     "numpy or torch.tensor(...) of the values)")
            check_close(tensor(got, f"gradient of {what}"), want, atol=1e-4, rtol=1e-4,
                        name=f"shifted_window_attention (x {tuple(x.shape)}, shift {shift}): gradient of {what}")
    _no_reference(h, "window_attention")


@check("grade_window_attention", "ShiftedWindowAttention (given) with torchvision's layer's weights equals it, shifted "
                                 "and not; no course.swin")
@owns("shifted_window_attention", "ShiftedWindowAttention")
def attention_layer(h):
    from torchvision.models.swin_transformer import ShiftedWindowAttention as TvLayer
    with seeded(411):
        layers = [_drawn_norms(TvLayer(8, [4, 4], [s, s], 2)).eval() for s in (0, 2)]
        x = torch.randn(2, 8, 12, 8)
    with torch.no_grad():
        outputs = [tv(x) for tv in layers]
    with h.substituted(**REF_WINDOWS), _no_torchvision(h):
        for s, tv, expected in zip((0, 2), layers, outputs):
            student = h.construct("ShiftedWindowAttention", 8, 4, 2, s)
            load_weights(student, {k: v for k, v in tv.state_dict().items() if k != "relative_position_index"},
                         "ShiftedWindowAttention")
            check_close(tensor(student(x), "output"), expected, atol=1e-5, rtol=1e-4, dims=MAP_DIMS,
                        name=f"ShiftedWindowAttention(8, 4, 2, shift {s}) vs torchvision's with the same weights")


# ==================================================================================================
# 5. patch merging
# ==================================================================================================
MERGE_ORDERS = {  # the four offsets (row, column) of a 2 x 2 neighbourhood, in the order concatenated
    "the column offset first ([x00, x01, x10, x11]): torchvision's order varies the row first, "
    "[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "the four pixels in reverse order": ((1, 1), (0, 1), (1, 0), (0, 0)),
    "[x00, x11, x01, x10]": ((0, 0), (1, 1), (0, 1), (1, 0))}


def _merge_mistakes(tv: nn.Module, x: torch.Tensor) -> dict:
    H, W = x.shape[1:3]
    p = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))

    def merged(offsets, norm=True, pad=p):
        cat = torch.cat([pad[:, i::2, j::2] for i, j in offsets], -1)
        return tv.reduction(tv.norm(cat) if norm else cat)
    with torch.no_grad():
        found = {label: merged(o) for label, o in MERGE_ORDERS.items()}
        found["no LayerNorm before the reduction"] = merged(((0, 0), (1, 0), (0, 1), (1, 1)), norm=False)
        if H % 2 or W % 2:
            found["the odd row or column dropped instead of padded with zeros"] = merged(
                ((0, 0), (1, 0), (0, 1), (1, 1)), pad=x[:, :H - H % 2, :W - W % 2])
    return found


@check("grade_patch_merging", "PatchMerging(4) with torchvision's weights equals it on 4 x 4 and 3 x 6 maps (the "
                              "visible tests)", mirrors_visible=True)
def merging_visible(h):
    with seeded(3):
        theirs = _notebook_norms(TorchvisionMerging(4))
        xs = [torch.randn(2, 4, 4, 4), torch.randn(2, 3, 6, 4)]
    ours = h.construct("PatchMerging", 4)
    load_weights(ours, theirs.state_dict(), "PatchMerging")
    with torch.no_grad():
        for x in xs:
            H, W = x.shape[1:3]
            got, want = tensor(ours(x), "output"), theirs(x)
            if got.shape != want.shape:
                raise AssertionError(f"{H} x {W}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
            if not torch.allclose(got, want, atol=1e-5):
                raise AssertionError(f"differs from torchvision's PatchMerging ({H} x {W})")


def _notebook_norms(module: nn.Module) -> nn.Module:
    """The notebook's random_norms (the same draws, in the same order)."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return module


MERGE_CASES = [(2, 4, 6, 6), (1, 5, 7, 4), (3, 2, 2, 8), (1, 1, 3, 2), (2, 6, 4, 5), (1, 9, 8, 3)]  # B, H, W, C


@check("grade_patch_merging", "equals torchvision's PatchMerging with the same (random) weights on random sizes (odd "
                              "sides padded, a 1 x 3 map, C = 2 to 8); norm (LayerNorm(4C)) and reduction (Linear(4C, "
                              "2C), no bias); gradients of the map equal the reference's; no course.swin")
@owns("PatchMerging")
def merging_random(h):
    cases = drawn(501, len(MERGE_CASES), lambda t: (_drawn_norms(TorchvisionMerging(MERGE_CASES[t][3])).eval(),
                                                    torch.randn(*MERGE_CASES[t])))
    with torch.no_grad():
        runs = [(tv, x, tv(x), _merge_mistakes(tv, x)) for tv, x in cases]
    with _no_torchvision(h):
        _merging_runs(h, runs)
    _no_reference(h, "patch_merging")


def _merging_runs(h, runs: list) -> None:
    for i, ((B, H, W, C), (tv, x, expected, likely)) in enumerate(zip(MERGE_CASES, runs)):
        where = f"PatchMerging({C}) of x [{B}, {H}, {W}, {C}]"
        student = h.construct("PatchMerging", C)
        if i == 0:
            check_parameters(h, student, {n: tuple(p.shape) for n, p in tv.named_parameters()}, name=f"PatchMerging({C})",
                             want="norm = nn.LayerNorm(4C), reduction = nn.Linear(4C, 2C, bias=False)")
        load_weights(student, tv.state_dict(), "PatchMerging")
        check_close(tensor(student(x), where), expected, atol=1e-5, rtol=1e-4, name=where + " vs torchvision's",
                    dims=MAP_DIMS, likely=likely,
                    hint="pad an odd side, cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], "
                         "x[:, 1::2, 1::2]], -1), norm, reduction")


# ==================================================================================================
# 6. the block and the network (graded with the reference attention and patch merging)
# ==================================================================================================
REF_PARTS = {n: REF + n for n in ("ShiftedWindowAttention", "PatchMerging", "shifted_window_attention",
                                  "window_partition", "window_reverse", "relative_position_index", "shift_mask")}


def _tv_swin(depths: tuple, heads: tuple, dim: int = 16, classes: int = 10) -> nn.Module:
    """As the notebook's torchvision_swin (the same draws, in the same order)."""
    tv = SwinTransformer([2, 2], dim, list(depths), list(heads), [4, 4], stochastic_depth_prob=0.0,
                         num_classes=classes).eval()
    with torch.no_grad():
        _notebook_norms(tv)
        for m in tv.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features ** -0.5)
        tv.head.bias.normal_(0, 0.3)
    return tv


def _swin_state(tv: nn.Module, depths: tuple) -> dict:
    theirs = tv.state_dict()
    return {ours: theirs[t] for ours, t in ref.torchvision_names(depths).items()}


@check("grade_swin", "SwinBlock(8, 2, 4, 2) keeps (B, H, W, C); Swin(2, 3, 10, 16, (2, 2), (2, 4), 4) equals "
                     "torchvision's SwinTransformer with the same weights (the visible tests)", mirrors_visible=True)
def swin_visible(h):
    with seeded(4):
        x = torch.randn(2, 8, 8, 8)
        theirs = _tv_swin((2, 2), (2, 4))
        images = torch.randn(2, 3, 16, 16)
    with h.substituted(ShiftedWindowAttention=REF + "ShiftedWindowAttention", PatchMerging=REF + "PatchMerging"):
        block = h.construct("SwinBlock", 8, 2, 4, 2).eval()
        if tuple(tensor(block(x), "SwinBlock output").shape) != (2, 8, 8, 8):
            raise AssertionError("SwinBlock(8, 2, 4, 2) should map (B, H, W, C) to (B, H, W, C)")
        model = h.construct("Swin", 2, 3, 10, 16, (2, 2), (2, 4), 4).eval()
        load_weights(model, _swin_state(theirs, (2, 2)), "Swin")
        with torch.no_grad():
            expected = theirs(images)
        if not torch.allclose(tensor(model(images), "logits"), expected, atol=1e-4):
            raise AssertionError("logits differ from torchvision's SwinTransformer with the same weights")


def _block_mistakes(tv: nn.Module, x: torch.Tensor) -> dict:
    def run(post=False, res=(True, True), act=F.gelu):
        a, n1, n2 = tv.attn, tv.norm1, tv.norm2

        def mlp(t):
            return tv.mlp[3](act(tv.mlp[0](t)))
        if post:
            x1 = n1(x + a(x))
            return n2(x1 + mlp(x1))
        y = a(n1(x))
        x1 = x + y if res[0] else y
        m = mlp(n2(x1))
        return x1 + m if res[1] else m
    with torch.no_grad():
        return {"post-norm, LN(x + attn(x)): Swin's block is pre-norm, x + attn(norm1(x)), then + mlp(norm2(x))":
                run(post=True), "no residual around the attention": run(res=(False, True)),
                "no residual around the MLP": run(res=(True, False)), "ReLU in the MLP: nn.GELU()": run(act=F.relu)}


BLOCK_CASES = [(8, 2, 4, 2, (2, 8, 8)), (6, 1, 3, 1, (1, 7, 5)), (16, 4, 2, 1, (2, 4, 6))]  # shift 0: the network's
SWIN_CASES = [((2, 2), (2, 4), 16, 10, (2, 16, 16)), ((2, 2, 2), (2, 2, 4), 16, 10, (1, 24, 24)),
              ((1, 3), (1, 2), 8, 5, (1, 24, 40))]


@check("grade_swin", "SwinBlock equals torchvision's SwinTransformerBlock (the same weights, dropout and stochastic "
                     "depth 0) shifted and not, on maps not divisible by the window; the parameters of the notebook's "
                     "names; dropout off in eval mode and on in training mode; no course.swin")
@owns("SwinBlock")
def swin_block(h):
    cases = drawn(601, len(BLOCK_CASES), lambda t: (
        _drawn_norms(_drawn_linears(TorchvisionBlock(BLOCK_CASES[t][0], BLOCK_CASES[t][1], [BLOCK_CASES[t][2]] * 2,
                                                     [BLOCK_CASES[t][3]] * 2, stochastic_depth_prob=0.0))).eval(),
        torch.randn(*BLOCK_CASES[t][4], BLOCK_CASES[t][0])))
    with torch.no_grad():
        runs = [(tv, x, tv(x), _block_mistakes(tv, x)) for tv, x in cases]
    with h.substituted(**REF_PARTS), _no_torchvision(h):
        for i, ((C, heads, M, shift, _), (tv, x, expected, likely)) in enumerate(zip(BLOCK_CASES, runs)):
            # the first block with dropout 0.5, in eval mode: dropout must be off there (then on in training mode)
            where = f"SwinBlock({C}, {heads}, {M}, {shift}{', dropout=0.5) in eval mode' if i == 0 else ')'} of x " \
                    f"{tuple(x.shape)}"
            student = h.construct("SwinBlock", C, heads, M, shift, *((4.0, 0.5) if i == 0 else ()))
            if i == 0:
                check_parameters(h, student, {n: tuple(p.shape) for n, p in tv.named_parameters()}, name=where,
                                 want="norm1, attn (ShiftedWindowAttention), norm2, mlp = Sequential(Linear, GELU, "
                                      "Dropout, Linear, Dropout)")
            load_weights(student, {k: v for k, v in tv.state_dict().items() if not k.endswith("position_index")},
                         "SwinBlock")
            if i == 0:
                student.eval()
            check_close(tensor(student(x), where), expected, atol=1e-5, rtol=1e-4, dims=MAP_DIMS, likely=likely,
                        name=where + " vs torchvision's SwinTransformerBlock" +
                        (" (dropout is off in eval mode)" if i == 0 else ""))
            if i == 0:
                first_block = student
        (C, heads, M, shift, _), (tv, x, expected, _) = BLOCK_CASES[0], runs[0]
        where = f"SwinBlock({C}, {heads}, {M}, {shift}, dropout=0.5)"
        first_block.train()
        first, second = tensor(first_block(x), where), tensor(first_block(x), where)
        if torch.equal(first, second):
            raise AssertionError(f"{where} in training mode gives the same output twice: the dropout argument is not "
                                 "used (mlp = Sequential(Linear, GELU, Dropout(dropout), Linear, Dropout(dropout)))")
    _no_reference(h, "swin")


@check("grade_swin", "Swin equals torchvision's SwinTransformer with the same (random) weights on random "
                     "configurations (2 and 3 stages, depths 1 to 3, images 16 x 16 to 24 x 40: maps not divisible by "
                     "the window), the blocks alternating shift 0 and M // 2; no course.swin")
@owns("Swin", "SwinBlock")
def swin_network(h):
    cases = drawn(611, len(SWIN_CASES), lambda t: (_drawn_norms(_drawn_linears(_tv_swin(*SWIN_CASES[t][:4]))),
                                                   torch.randn(SWIN_CASES[t][4][0], 3, *SWIN_CASES[t][4][1:])))
    with torch.no_grad():
        runs = [(tv, x, tv(x)) for tv, x in cases]
    with h.substituted(**REF_PARTS), _no_torchvision(h):
        for (depths, heads, dim, classes, _), (tv, x, expected) in zip(SWIN_CASES, runs):
            where = f"Swin(2, 3, {classes}, {dim}, {depths}, {heads}, 4) of images {tuple(x.shape)}"
            student = h.construct("Swin", 2, 3, classes, dim, depths, heads, 4)
            load_weights(student, _swin_state(tv, depths), "Swin")
            check_close(tensor(student(x), where), expected, atol=1e-4, rtol=1e-4, dims=("batch", "class"),
                        name=where + " vs torchvision's SwinTransformer",
                        hint="patch_embed, patch_norm, stages and merges in turn (shift 0 and M // 2 alternating), "
                             "norm, mean over positions, head")
    _no_reference(h, "swin")
