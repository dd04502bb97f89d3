"""Hidden checks of assignment 06 (from fully convolutional networks to U-Net), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``06_unet.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs and expected values are made here, from
PyTorch's own operations (``F.conv_transpose2d``, ``F.max_unpool2d``, ``F.binary_cross_entropy_with_logits``), from
the course's references (``course.unet``: the one home of the solution, also used by the notebook's grade cells) and
from hand-made masks. Conventions as in 01's to 03's checks:

- each exercise is graded with the references of the parts it builds on (``h.substituted``: ``combined_loss`` with
  the reference BCE and soft Dice), so a mistake costs points once (``tests/mutants/06_unet/`` proves it);
- a check "(the visible tests)" repeats its grade cell's asserts exactly (same seeds, same calls): it disagrees with
  the notebook's run only when something was tampered with;
- a failure message's first line says what is wrong and where; ``likely=`` names the classic mistake a result
  matches (the kernel flipped, the skip concatenated after the upsampled features, a Dice over the whole batch, NaN
  on empty masks ...): those tables are this file's;
- where an exercise rebuilds a PyTorch operation, that operation raises while the student's code runs
  (``h.forbidden``), and course.unet's answer to the part is forbidden too (``owns``: also through an alias or a
  subclass); no cell of the student's may import course.unet or copy its code (``_no_reference``);
- each grade cell's checks stay well under 2 s on a CPU.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import course.unet as ref
from autograder.checkkit import Answers, drawn, load_weights, module, seed_kernel, tensor, what
from autograder.trusted import RemoteObject, StudentError, check
from course.testing import check_close, seeded

REF = "course.unet."
Y_DIMS = ("batch", "channel", "row", "column")
ANSWERS = Answers("course.unet")
_no_reference, _own, owns = ANSWERS.scan, ANSWERS.forbidden, ANSWERS.owns


def _warm_up() -> None:
    """What the references import or build on first use (BN, transposed convolutions): when the checks load."""
    with torch.no_grad():
        ref.UNet(1, 1, 2, 1).eval()(torch.randn(1, 1, 4, 4))


_warm_up()


@contextlib.contextmanager
def _without(h, paths: tuple[str, ...], what_: str) -> Iterator[None]:
    """The library functions at ``paths`` raise in the kernel meanwhile; a use is named (``what_``: the exercise)."""
    try:
        with h.forbidden(*paths):
            yield
    except StudentError as e:
        hit = re.match(r"([\w.]+) may not be used here", e.message or "")
        if hit and e.type_name == "RuntimeError" and hit.group(1) in paths:
            raise AssertionError(f"your code calls {hit.group(1)}: {what_}") from None
        raise


def _shape(x, expected: tuple, name: str, why: str = "") -> torch.Tensor:
    x = tensor(x, name)
    if tuple(x.shape) != tuple(expected):
        raise AssertionError(f"{name} has shape {tuple(x.shape)}, expected {tuple(expected)}" + (f": {why}" if why else ""))
    return x


# ==================================================================================================
# 1. fully connected -> convolution
# ==================================================================================================
def _linear(h, in_features: int, out_features: int, bias: bool, dtype=torch.float32) -> tuple[RemoteObject, dict]:
    """An ``nn.Linear`` in the student's kernel with weights made here: (the remote layer, its state)."""
    lin = h.library("torch.nn.Linear")(in_features, out_features, bias=bias)
    if dtype == torch.float64:
        lin = lin.call_method("double")
    state = {"weight": torch.randn(out_features, in_features, dtype=dtype)}
    if bias:
        state["bias"] = torch.randn(out_features, dtype=dtype)
    load_weights(lin, state, "nn.Linear")
    return lin, state


def _conv_of(h, conv: Any, where: str) -> dict:
    if not isinstance(conv, RemoteObject):
        raise AssertionError(f"fc_to_conv should return an nn.Conv2d, got {what(conv)} {where}")
    state = conv.state_dict()
    if not isinstance(state.get("weight"), torch.Tensor):
        raise AssertionError(f"fc_to_conv returned {conv.type_name} without a weight: return an nn.Conv2d {where}")
    return state


@check("grade_fc_to_conv", "conv.weight (5, 3, 2, 4); conv(x) equals the linear layer on the flattened x; the "
                           "score map of a 5 x 7 input and its score (1, 2) (the visible tests)", mirrors_visible=True)
def fc_visible(h):
    with seeded(1):
        x, big = torch.randn(2, 3, 2, 4), torch.randn(1, 3, 5, 7)
    seed_kernel(h, 11)
    linear = h.library("torch.nn.Linear")(3 * 2 * 4, 5)
    conv = h.call("fc_to_conv", linear, 3, 2, 4)
    state = _conv_of(h, conv, "")
    lin = linear.state_dict()
    if tuple(state["weight"].shape) != (5, 3, 2, 4):
        raise AssertionError("conv.weight should be (out, C, h, w) = (5, 3, 2, 4)")
    with torch.no_grad():
        check_close(tensor(conv(x), "conv(x)").flatten(1), F.linear(x.flatten(1), lin["weight"], lin["bias"]),
                    atol=1e-5, name="conv(x) vs the linear layer on the flattened x")
        scores = tensor(conv(big), "the score map")
        if tuple(scores.shape) != (1, 5, 4, 4):
            raise AssertionError("the score map of a 5 x 7 input should be (1, 5, 4, 4)")
        check_close(scores[0, :, 1, 2], F.linear(big[:, :, 1:3, 2:6].flatten(1), lin["weight"], lin["bias"])[0],
                    atol=1e-5, name="score (1, 2) vs the classifier on the window at rows 1-2, columns 2-5")


FC_CASES = [  # C, h, w, out, bias, dtype, the larger map (H, W)
    (2, 3, 2, 4, True, torch.float32, (5, 6)), (4, 1, 1, 3, True, torch.float32, (3, 2)),
    (1, 4, 3, 2, False, torch.float32, (6, 3)), (3, 2, 5, 6, True, torch.float64, (4, 9)),
    (5, 3, 3, 1, False, torch.float32, (3, 3))]


@check("grade_fc_to_conv", "the kernel is the weight viewed as (out, C, h, w) and the bias is copied (none without "
                           "one), for square and non-square windows, 1x1, float64; score maps of larger inputs equal the "
                           "classifier on every window; no course.unet")
@owns("fc_to_conv")
def fc_values(h):
    maps = drawn(101, len(FC_CASES), lambda t: torch.randn(2, FC_CASES[t][0], *FC_CASES[t][6], dtype=FC_CASES[t][5]))
    with seeded(102):
        for (C, kh, kw, out, bias, dtype, (H, W)), big in zip(FC_CASES, maps):
            where = f"(a Linear({C} * {kh} * {kw}, {out}, bias={bias}){', float64' if dtype == torch.float64 else ''})"
            lin, lstate = _linear(h, C * kh * kw, out, bias, dtype)
            conv = h.call("fc_to_conv", lin, C, kh, kw)
            state = _conv_of(h, conv, where)
            w = lstate["weight"]
            kernel = w.view(out, C, kh, kw)
            if tuple(state["weight"].shape) != (out, C, kh, kw):
                raise AssertionError(f"conv.weight has shape {tuple(state['weight'].shape)}, expected (out, C, h, w) = "
                                     f"{(out, C, kh, kw)} {where}")
            if state["weight"].dtype != dtype:
                raise AssertionError(f"conv.weight is {state['weight'].dtype}, expected the linear layer's {dtype} "
                                     f"{where}")
            wrong = {"the kernel viewed as (out, C, w, h) then transposed: flatten(1) orders channel, row, column, so "
                     "the weight views as (out, C, h, w)": w.view(out, C, kw, kh).transpose(2, 3),
                     "the kernel viewed as (out, h, w, C): flatten(1) puts the channel first":
                         w.view(out, kh, kw, C).permute(0, 3, 1, 2)} if (kh, kw) != (1, 1) or C > 1 else {}
            check_close(state["weight"], kernel, atol=0, rtol=0, name=f"conv.weight {where}",
                        dims=("out", "channel", "row", "column"),
                        likely={k: v for k, v in wrong.items() if not torch.equal(v, kernel)})
            if bias and not isinstance(state.get("bias"), torch.Tensor):
                raise AssertionError(f"conv has no bias {where}: copy linear.bias into it")
            if not bias and isinstance(state.get("bias"), torch.Tensor):
                raise AssertionError(f"conv has a bias, the linear layer none {where}: bias=False")
            if bias:
                check_close(state["bias"], lstate["bias"], atol=0, rtol=0, name=f"conv.bias {where}")
            scores = tensor(conv(big), f"the score map of a {H} x {W} input {where}")
            expected = F.conv2d(big, kernel, lstate.get("bias"))
            check_close(scores, expected, atol=1e-5, name=f"the score map of a {H} x {W} input {where}",
                        dims=("image", "class", "row", "column"))
    _no_reference(h, "fc_to_conv")


# ==================================================================================================
# 2. transposed convolution by stamping (F.conv_transpose2d forbidden)
# ==================================================================================================
# the operators too ("aten.*": however Python reaches them, torch.convolution(..., transposed=True), torch.ops.aten,
# the autograd of a convolution, torch.nn.grad.conv2d_input; a reviewer's four ways kept their points before)
NO_TORCH_CT = ("torch.nn.functional.conv_transpose2d", "torch.conv_transpose2d", "torch.nn.functional.conv2d",
               "torch.conv2d", "aten.convolution", "aten.convolution_backward")
CT_OWN = "this exercise rebuilds F.conv_transpose2d by stamping the kernel, input pixel by input pixel"


def _ct_mistakes(x, w, b, s, p, op) -> dict:
    """What the classic mistakes of stamping give (the shapes that match the right one only)."""
    found = {"the kernel flipped: stamp the kernel as it is (a convolution flips, its transpose does not)":
             F.conv_transpose2d(x, w.flip(-1, -2), b, s, p, op)}
    if b is not None:
        found["no bias"] = F.conv_transpose2d(x, w, None, s, p, op)
    return found


@check("grade_conv_transpose", "stride 1, 2, 3 with padding and output padding: shapes and values equal "
                               "F.conv_transpose2d (the visible tests)", mirrors_visible=True)
def ct_visible(h):
    with seeded(2):
        x, weight, bias = torch.randn(2, 3, 4, 5), torch.randn(3, 2, 3, 3), torch.randn(2)
    for stride, padding, output_padding in [(1, 0, 0), (2, 1, 1), (3, 1, 0)]:
        out = tensor(h.call("conv_transpose2d_stamp", x, weight, bias, stride, padding, output_padding), "out")
        expected = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
        where = f"stride={stride}, padding={padding}, output_padding={output_padding}"
        if out.shape != expected.shape:
            raise AssertionError(f"{where}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}")
        check_close(out, expected, atol=1e-5, name=f"{where}: values vs F.conv_transpose2d", dims=Y_DIMS)


CT_CASES = [  # B, C_in, C_out, H, W, kernel, stride, padding, output_padding, bias, dtype
    (2, 2, 3, 3, 4, 3, 1, 0, 0, True, torch.float32), (1, 3, 2, 4, 4, 2, 2, 0, 0, True, torch.float32),
    (2, 1, 2, 3, 5, 4, 2, 1, 0, False, torch.float32), (1, 2, 2, 2, 3, 5, 3, 2, 2, True, torch.float32),
    (1, 2, 1, 3, 2, (2, 3), (2, 1), (0, 1), (1, 0), True, torch.float32),
    (2, 2, 2, 3, 3, 3, 2, 1, 1, True, torch.float64), (1, 1, 1, 1, 1, 3, 2, 0, 1, True, torch.float32),
    (1, 3, 4, 5, 2, 1, 2, 0, 1, False, torch.float32)]


def _ct_where(case) -> str:
    B, C_in, C_out, H, W, k, s, p, op, bias, dtype = case
    return (f"(x {(B, C_in, H, W)}, kernel {k}, stride {s}, padding {p}, output_padding {op}"
            + (", no bias" if not bias else "") + (", float64)" if dtype == torch.float64 else ")"))


@check("grade_conv_transpose", "equals F.conv_transpose2d (not used) on random cases: kernels 1 to 5, non-square "
                               "kernels and strides, pairs for stride/padding/output padding, a 1x1 input, no bias, "
                               "float64; no course.unet")
@owns("conv_transpose2d_stamp")
def ct_random(h):
    def make(t):
        B, C_in, C_out, H, W, k, s, p, op, bias, dtype = CT_CASES[t]
        kh, kw = (k, k) if isinstance(k, int) else k
        return (torch.randn(B, C_in, H, W, dtype=dtype), torch.randn(C_in, C_out, kh, kw, dtype=dtype),
                torch.randn(C_out, dtype=dtype) if bias else None)
    cases = drawn(201, len(CT_CASES), make)
    expected = [(F.conv_transpose2d(x, w, b, *case[6:9]), _ct_mistakes(x, w, b, *case[6:9]))
                for case, (x, w, b) in zip(CT_CASES, cases)]  # here, before the kernel's is forbidden
    for case, (x, w, b), (right, wrong) in zip(CT_CASES, cases, expected):
        s, p, op = case[6:9]
        where = _ct_where(case)
        with _without(h, NO_TORCH_CT, CT_OWN):
            got = h.call("conv_transpose2d_stamp", x, w, b, s, p, op)
        out = _shape(got, right.shape, f"out {where}",
                     "H_out = (H - 1) * stride - 2 * padding + kH + output_padding: output_padding adds rows "
                     "(columns) at the bottom (right) of the full output, padding crops from both sides")
        tol = dict(atol=1e-5, rtol=1e-4) if x.dtype == torch.float32 else dict(atol=1e-10, rtol=1e-8)
        check_close(out, right, **tol, name=f"out {where}", dims=Y_DIMS, likely=wrong)
    _no_reference(h, "conv_transpose")


@check("grade_conv_transpose", "a single pixel stamps the kernel at stride times its position; gradients with respect "
                               "to x, the weight and the bias equal F.conv_transpose2d's")
@owns("conv_transpose2d_stamp")
def ct_stamp_and_grads(h):
    kernel = torch.arange(1.0, 13.0).view(1, 1, 3, 4)
    one = torch.zeros(1, 1, 3, 2)
    one[0, 0, 2, 1] = 1.0
    with _without(h, NO_TORCH_CT, CT_OWN):
        got = _shape(h.call("conv_transpose2d_stamp", one, kernel, None, 2, 0, 0), (1, 1, 7, 6),
                     "one pixel (2, 1) of a 3 x 2 input, kernel 3 x 4, stride 2")
    stamped = torch.zeros(1, 1, 7, 6)
    stamped[0, 0, 4:7, 2:6] = kernel[0, 0]
    flipped = torch.zeros(1, 1, 7, 6)
    flipped[0, 0, 4:7, 2:6] = kernel[0, 0].flip(0, 1)
    check_close(got, stamped, atol=1e-6, name="one pixel (2, 1), kernel 3 x 4, stride 2", dims=Y_DIMS,
                likely={"the kernel flipped: stamp it as it is": flipped},
                hint="pixel (i, j) adds x[i, j] * kernel at rows 2i .. 2i + 2, columns 2j .. 2j + 3")
    with seeded(211):
        args = (torch.randn(2, 2, 3, 4), torch.randn(2, 3, 3, 3), torch.randn(3))
        cot = torch.randn(2, 3, 6, 8)
    with _without(h, NO_TORCH_CT, CT_OWN):
        got = h.vjp("conv_transpose2d_stamp", (*args, 2, 1, 1), (cot,))
    leaves = [a.clone().requires_grad_() for a in args]
    F.conv_transpose2d(*leaves, 2, 1, 1).backward(cot)
    if not isinstance(got, list) or len(got) < 3:
        raise AssertionError(f"the gradients of conv_transpose2d_stamp could not be computed, got {what(got)}")
    for label, d, leaf in zip(("x", "weight", "bias"), got, leaves):
        if d is None:
            raise AssertionError(f"no gradient reaches {label} (stride 2, padding 1, output_padding 1): keep every "
                                 "step in torch (no .detach(), .item() or numpy)")
        check_close(tensor(d, f"gradient of {label}"), leaf.grad, atol=1e-5, rtol=1e-4,
                    name=f"the gradient with respect to {label} (stride 2, padding 1, output_padding 1)")


# ==================================================================================================
# 3. max unpooling (F.max_unpool2d forbidden)
# ==================================================================================================
NO_TORCH_UNPOOL = ("torch.nn.functional.max_unpool2d", "torch._C._nn.max_unpool2d", "aten.max_unpool2d")
UNPOOL_OWN = "this exercise rebuilds F.max_unpool2d: scatter the values to their indices yourself"


@check("grade_max_unpool", "a 7 x 9 input pooled by 2 and unpooled: shape (2, 3, 7, 9), equal to F.max_unpool2d "
                           "(the visible tests)", mirrors_visible=True)
def unpool_visible(h):
    with seeded(3):
        x = torch.randn(2, 3, 7, 9)
        pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    out = tensor(h.call("max_unpool", pooled, indices, (7, 9)), "max_unpool")
    if tuple(out.shape) != (2, 3, 7, 9):
        raise AssertionError(f"max_unpool: shape {tuple(out.shape)}, expected (2, 3, 7, 9)")
    check_close(out, F.max_unpool2d(pooled, indices, 2, output_size=(7, 9)), atol=0, rtol=0,
                name="max_unpool vs F.max_unpool2d", dims=Y_DIMS)


UNPOOL_CASES = [((2, 2, 6, 8), 2, 2), ((1, 3, 7, 9), 2, 2), ((2, 1, 7, 7), 3, 2), ((1, 2, 5, 6), 3, 3),
                ((3, 2, 4, 10), (2, 3), (2, 3)), ((1, 1, 1, 5), 1, 1)]


@check("grade_max_unpool", "equals F.max_unpool2d (not used) for other sizes, odd sizes, overlapping and non-square "
                           "windows, several images and channels, float64 and integer-valued inputs; no course.unet")
@owns("max_unpool")
def unpool_random(h):
    inputs = drawn(301, len(UNPOOL_CASES), lambda t: torch.randn(*UNPOOL_CASES[t][0],
                                                                 dtype=torch.float64 if t == 2 else torch.float32))
    for (size, k, s), x in zip(UNPOOL_CASES, inputs):
        pooled, indices = F.max_pool2d(x, k, s, return_indices=True)
        expected = F.max_unpool2d(pooled, indices, k, s, output_size=size[2:])
        nearest = F.interpolate(pooled, size=size[2:], mode="nearest")
        where = f"(x {size}, kernel {k}, stride {s})"
        try:
            with _without(h, NO_TORCH_UNPOOL, UNPOOL_OWN):
                got = h.call("max_unpool", pooled, indices, size[2:])
        except StudentError as e:
            if "may not be used here" in (e.message or ""):
                raise  # a forbidden answer: @owns names it
            raise AssertionError(f"max_unpool raised on x {where}: {e}; output_size = {size[2:]} is the size before "
                                 "the pooling (an odd size is not twice the pooled one), and every index points into "
                                 "a plane of that size") from None
        out = _shape(got, size, f"out {where}", "output_size = (H, W) is the size before the pooling")
        check_close(out, expected, atol=0, rtol=0, name=f"out {where}", dims=Y_DIMS,
                    likely={"nearest upsampling: each value belongs at its index only, zeros elsewhere": nearest})
    _no_reference(h, "max_unpool")


# ==================================================================================================
# 4. U-Net
# ==================================================================================================
def _unet_forward(net: ref.UNet, x: torch.Tensor, *, order: str = "skip first", pad: str = "bottom right",
                  crop: bool = True) -> torch.Tensor:
    """The reference U-Net's forward with a planted mistake: ``order`` of the concatenation; ``pad``: where the zeros
    go ("bottom right", "centred", "top left")."""
    H, W = x.shape[-2:]
    m = 2**net.depth
    dh, dw = (-H) % m, (-W) % m
    if pad == "bottom right":
        box = (0, dw, 0, dh)
    elif pad == "top left":
        box = (dw, 0, dh, 0)
    else:
        box = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
    x = F.pad(x, box)
    features = []
    for level in range(net.depth):
        x = net.down[level](x)
        features.append(x)
        x = F.max_pool2d(x, 2)
    x = net.bottom(x)
    for level in reversed(range(net.depth)):
        x = net.up[level](x)
        if net.skips:
            x = torch.cat([features[level], x] if order == "skip first" else [x, features[level]], 1)
        x = net.dec[level](x)
    y = net.head(x)
    if not crop:
        return y
    return y[..., box[2]:box[2] + H, box[0]:box[0] + W]


def _randomise_bn(net: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from the identity: eval mode must use them."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.running_mean, 0, 0.2)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.2)
    return net


def _unet_mistakes(net: ref.UNet, x: torch.Tensor) -> dict:
    with torch.no_grad():
        found = {}
        if net.skips:
            found["[upsampled ; skip]: concatenate the encoder's features first, torch.cat([e_l, up_l(d)], 1)"] = \
                _unet_forward(net, x, order="upsampled first")
        if x.shape[-2] % 2**net.depth or x.shape[-1] % 2**net.depth:
            found["the zero padding centred: pad at the bottom and right only"] = _unet_forward(net, x, pad="centred")
            found["the zero padding at the top and left: pad at the bottom and right"] = _unet_forward(net, x,
                                                                                                      pad="top left")
    return found


def _call_net(net: RemoteObject, x: torch.Tensor, where: str) -> torch.Tensor:
    try:
        return tensor(net(x), f"the logits {where}")
    except StudentError as e:
        raise AssertionError(f"UNet's forward raised on an input {tuple(x.shape)} {where}: {e}; does every decoder "
                             "level l concatenate the encoder features of its own level (the output of down[l]), and "
                             "is the input padded to multiples of 2**depth?") from None


@check("grade_unet", "logits (2, 2, H, W) for 16 x 16 and 13 x 10 inputs with and without skips; 13 x 10 zero-padded "
                     "at the bottom and right and cropped back (the visible tests)", mirrors_visible=True)
def unet_visible(h):
    with seeded(4):
        x_square, x_odd = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 13, 10)
    for skips in (True, False):
        net = h.construct("UNet", 1, 2, width=4, depth=2, skips=skips).eval()
        for x in (x_square, x_odd):
            y = tensor(net(x), "y")
            if tuple(y.shape) != (2, 2, *x.shape[2:]):
                raise AssertionError(f"UNet(skips={skips}): logits {tuple(y.shape)} for an input {tuple(x.shape)}")
    net = h.construct("UNet", 1, 1, width=4, depth=2).eval()
    check_close(tensor(net(x_odd), "y"), tensor(net(F.pad(x_odd, (0, 2, 0, 3))), "y")[..., :13, :10], atol=1e-5,
                name="13 x 10: zero-pad at the bottom and right to multiples of 2**depth (16 x 12), crop the logits "
                     "back")


UNET_CASES = [  # in_ch, out_ch, width, depth, skips, x (B, H, W)
    (1, 1, 4, 2, True, (2, 16, 12)), (2, 3, 3, 3, True, (1, 19, 13)), (1, 2, 4, 1, True, (2, 7, 10)),
    (1, 1, 4, 3, False, (1, 21, 8)), (3, 1, 2, 2, False, (2, 8, 8)), (1, 1, 2, 2, True, (1, 3, 5))]


@check("grade_unet", "equals the text's U-Net with the same weights (eval mode, BN statistics set): depths 1-3, "
                     "several widths and channels, with and without skips, sizes that are and are not multiples of "
                     "2**depth, smaller than 2**depth; no course.unet")
@owns("UNet")
def unet_values(h):
    def make(t):
        in_ch, out_ch, width, depth, skips, (B, H, W) = UNET_CASES[t]
        return _randomise_bn(ref.UNet(in_ch, out_ch, width, depth, skips)).eval(), torch.randn(B, in_ch, H, W)
    cases = drawn(401, len(UNET_CASES), make)
    for (in_ch, out_ch, width, depth, skips, _), (net, x) in zip(UNET_CASES, cases):
        where = f"(UNet({in_ch}, {out_ch}, width={width}, depth={depth}, skips={skips}), x {tuple(x.shape)})"
        student = module(h, "UNet", in_ch, out_ch, width=width, depth=depth, skips=skips, state=net.state_dict())
        with torch.no_grad():
            expected = net(x)
        y = _call_net(student, x, where)
        if tuple(y.shape) == tuple(_unet_forward(net, x, crop=False).shape) and y.shape != expected.shape:
            raise AssertionError(f"the logits have the padded shape {tuple(y.shape)} {where}: crop them back to "
                                 f"[..., :H, :W] = {tuple(expected.shape)}")
        _shape(y, expected.shape, f"the logits {where}", "the logits keep the input's H and W")
        check_close(y, expected, atol=1e-4, rtol=1e-4, name=f"the logits {where}", dims=Y_DIMS,
                    likely=_unet_mistakes(net, x))
    _no_reference(h, "unet")


@check("grade_unet", "in training mode (BN on the batch's statistics) the gradients of the input and of every "
                     "parameter equal the text's U-Net's, on a size that is not a multiple of 2**depth")
@owns("UNet")
def unet_grads(h):
    with seeded(411):
        net = _randomise_bn(ref.UNet(1, 2, 3, 2, True))
        x = torch.randn(2, 1, 7, 12)
        cot = torch.randn(2, 2, 7, 12)
    student = module(h, "UNet", 1, 2, width=3, depth=2, skips=True, state=net.state_dict(), train=True)
    try:
        d_inputs, d_params = student.grads(x, grad_output=cot)
    except StudentError as e:
        raise AssertionError(f"UNet's forward and backward raised in training mode: {e}") from None
    net.train()
    leaf = x.clone().requires_grad_()
    net(leaf).backward(cot)
    where = "(UNet(1, 2, width=3, depth=2), x (2, 1, 7, 12), training mode)"
    if not isinstance(d_inputs, list) or not d_inputs or d_inputs[0] is None:
        raise AssertionError(f"no gradient reaches the input {where}")
    check_close(tensor(d_inputs[0], "the gradient of x"), leaf.grad, atol=1e-4, rtol=1e-3,
                name=f"the gradient with respect to the input {where}",
                hint="the forward of the text, with the BN layers in training mode")
    for name, p in net.named_parameters():
        got = d_params.get(name) if isinstance(d_params, dict) else None
        if got is None:
            raise AssertionError(f"no gradient reaches {name} {where}: is that module used in forward?")
        check_close(tensor(got, f"gradient of {name}"), p.grad, atol=1e-4, rtol=1e-3,
                    name=f"the gradient of {name} {where}")


# ==================================================================================================
# 5. losses
# ==================================================================================================
NO_TORCH_BCE = ("torch.nn.functional.binary_cross_entropy_with_logits", "torch.nn.functional.binary_cross_entropy",
                "torch.binary_cross_entropy_with_logits", "torch._C._nn.binary_cross_entropy",
                "aten.binary_cross_entropy_with_logits", "aten.binary_cross_entropy")
BCE_OWN = "this exercise writes the binary cross-entropy itself: softplus(z) - t z"


def _soft_dice(z, t, eps=1.0, per_image=True, eps_top=True):
    p, t = torch.sigmoid(z).flatten(1), t.flatten(1)
    if not per_image:
        p, t = p.reshape(1, -1), t.reshape(1, -1)
    d = (2 * (p * t).sum(1) + (eps if eps_top else 0.0)) / (p.sum(1) + t.sum(1) + eps)
    return 1 - d.mean()


@check("grade_losses", "bce_loss and soft_dice_loss on (2, 1, 4, 5); combined_loss = bce_loss + soft_dice_loss "
                       "(the visible tests)", mirrors_visible=True)
def losses_visible(h):
    with seeded(5):
        z, t = torch.randn(2, 1, 4, 5) * 3, (torch.rand(2, 1, 4, 5) > 0.6).float()
    check_close(tensor(h.call("bce_loss", z, t), "bce_loss"), F.binary_cross_entropy_with_logits(z, t), atol=1e-6,
                name="bce_loss vs the mean binary cross-entropy")
    p = torch.sigmoid(z)
    dice_b = (2 * (p * t).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1)
    check_close(tensor(h.call("soft_dice_loss", z, t), "soft_dice_loss"), 1 - dice_b.mean(), atol=1e-6,
                name="soft_dice_loss vs 1 - the mean over the images of their soft Dice")
    with h.substituted(bce_loss=REF + "bce_loss", soft_dice_loss=REF + "soft_dice_loss"):
        got = tensor(h.call("combined_loss", z, t), "combined_loss")
    check_close(got, ref.bce_loss(z, t) + ref.soft_dice_loss(z, t), atol=1e-6,
                name="combined_loss vs bce_loss + soft_dice_loss")


@check("grade_losses", "bce_loss equals the mean binary cross-entropy (F.binary_cross_entropy_with_logits, not used) "
                       "with and without per-pixel weights, finite and exact for logits of +-200 and 1e4, float64; "
                       "its gradient is sigmoid(z) - t over N")
@owns("bce_loss")
def bce_values(h):
    def make(t):
        shape = [(3, 1, 5, 6), (2, 1, 7, 3), (1, 1, 4, 4)][t]
        dtype = torch.float64 if t == 2 else torch.float32
        return (torch.randn(shape, dtype=dtype) * 4, (torch.rand(shape) > 0.7).to(dtype), torch.rand(shape, dtype=dtype) * 3)
    cases = drawn(501, 3, make)
    extreme = (torch.tensor([[[[-200.0, 200.0, 1e4, -1e4, 0.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0, 0.0, 1.0]]]]))
    for z, t, w in cases:
        where = f"(logits {tuple(z.shape)}{', float64' if z.dtype == torch.float64 else ''})"
        none = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        expected, expected_w = none.mean(), (none * w).mean()
        with _without(h, NO_TORCH_BCE, BCE_OWN):
            got, got_w = h.call("bce_loss", z, t), h.call("bce_loss", z, t, w)
        check_close(tensor(got, f"bce_loss {where}"), expected, atol=1e-6, rtol=1e-5, name=f"bce_loss {where}",
                    likely={"the sum over the pixels: take the mean": none.sum(),
                            "the mean over the membrane pixels only: every pixel counts, t = 0 included":
                                (none * t).sum() / t.sum()})
        check_close(tensor(got_w, f"bce_loss with a weight {where}"), expected_w, atol=1e-6, rtol=1e-5,
                    name=f"bce_loss with a per-pixel weight {where}",
                    likely={"the weight ignored": expected,
                            "divided by the sum of the weights: the mean over the pixels of weight * bce":
                                (none * w).sum() / w.sum()})
    with _without(h, NO_TORCH_BCE, BCE_OWN):
        got = tensor(h.call("bce_loss", *extreme), "bce_loss of extreme logits")
        grads = h.vjp("bce_loss", (cases[0][0], cases[0][1]), (torch.tensor(1.0),))
    if not bool(torch.isfinite(got).all()):
        raise AssertionError("bce_loss of logits -200, 200, 1e4, -1e4 (targets 1, 0, 1, 0) is not finite: "
                             "log(sigmoid(z)) underflows to log(0); use softplus(z) - t z (or logsigmoid)")
    check_close(got, F.binary_cross_entropy_with_logits(*extreme), atol=1e-3, rtol=1e-5,
                name="bce_loss of logits -200, 200, 1e4, -1e4, 0", hint="softplus(z) - t z is exact for any z")
    z, t = cases[0][0], cases[0][1]
    if not isinstance(grads, list) or grads[0] is None:
        raise AssertionError("no gradient of bce_loss reaches the logits: keep it in torch")
    check_close(tensor(grads[0], "the gradient of bce_loss"), (torch.sigmoid(z) - t) / z.numel(), atol=1e-6,
                rtol=1e-4, name="the gradient of bce_loss with respect to the logits")
    _no_reference(h, "losses")


@check("grade_losses", "soft_dice_loss per image with eps in both sums (several eps), 0 for an empty target "
                       "predicted empty, finite for empty masks; its gradient")
@owns("soft_dice_loss")
def dice_values(h):
    with seeded(511):
        z, t = torch.randn(4, 1, 5, 6) * 2, (torch.rand(4, 1, 5, 6) > 0.6).float()
        t[1] = 0.0  # an image without membrane
        w = torch.rand(4, 1, 5, 6) * 2
        cot = torch.tensor(1.0)
    empty = torch.zeros(3, 1, 4, 4)
    for eps in (1.0, 0.5, 1e-6):
        expected = _soft_dice(z, t, eps)
        check_close(tensor(h.call("soft_dice_loss", z, t, eps), f"soft_dice_loss (eps={eps})"), expected, atol=1e-5,
                    rtol=1e-4, name=f"soft_dice_loss of 4 images, one without membrane (eps={eps})",
                    likely={"one Dice over the whole batch: compute it per image, then average":
                                _soft_dice(z, t, eps, per_image=False),
                            "eps in the denominator only: (2 sum p t + eps) / (sum p + sum t + eps)":
                                _soft_dice(z, t, eps, eps_top=False),
                            "the Dice of the thresholded prediction: use the probabilities sigmoid(z)":
                                _soft_dice(torch.where(z > 0, 50.0, -50.0), t, eps)})
    confident = tensor(h.call("soft_dice_loss", torch.full_like(empty, -30.0), empty), "soft_dice_loss")
    half = tensor(h.call("soft_dice_loss", torch.zeros_like(empty), empty), "soft_dice_loss")
    if not (bool(torch.isfinite(confident)) and bool(torch.isfinite(half))):
        raise AssertionError("soft_dice_loss is NaN or inf on an empty target: keep eps in both sums")
    check_close(confident, torch.tensor(0.0), atol=1e-5, name="soft_dice_loss of an empty target predicted empty "
                "(logits -30)", hint="(2 * 0 + eps) / (0 + 0 + eps) = 1: Dice 1, loss 0")
    grads = h.vjp("soft_dice_loss", (z, t), (cot,))
    leaf = z.clone().requires_grad_()
    ref.soft_dice_loss(leaf, t).backward()
    if not isinstance(grads, list) or grads[0] is None:
        raise AssertionError("no gradient of soft_dice_loss reaches the logits: use sigmoid(z), not a threshold")
    check_close(tensor(grads[0], "the gradient of soft_dice_loss"), leaf.grad, atol=1e-6, rtol=1e-4,
                name="the gradient of soft_dice_loss with respect to the logits")


@check("grade_losses", "combined_loss passes the weight to the BCE and eps to the Dice (graded with the reference "
                       "bce_loss and soft_dice_loss)")
@owns("combined_loss")
def combined_values(h):
    with seeded(521):
        z, t = torch.randn(3, 1, 4, 6) * 2, (torch.rand(3, 1, 4, 6) > 0.6).float()
        w = torch.rand(3, 1, 4, 6) * 2
    with h.substituted(bce_loss=REF + "bce_loss", soft_dice_loss=REF + "soft_dice_loss"):
        got = tensor(h.call("combined_loss", z, t, w, 0.5), "combined_loss")
        plain = tensor(h.call("combined_loss", z, t), "combined_loss")
    check_close(got, ref.bce_loss(z, t, w) + ref.soft_dice_loss(z, t, 0.5), atol=1e-5,
                name="combined_loss(logits, target, weight, eps=0.5)",
                likely={"the weight not passed to bce_loss": ref.bce_loss(z, t) + ref.soft_dice_loss(z, t, 0.5),
                        "eps not passed to soft_dice_loss": ref.bce_loss(z, t, w) + ref.soft_dice_loss(z, t)})
    check_close(plain, ref.bce_loss(z, t) + ref.soft_dice_loss(z, t), atol=1e-5, name="combined_loss(logits, target)")


# ==================================================================================================
# 6. metrics
# ==================================================================================================
METRICS = ("pixel_accuracy", "iou", "dice")


def _metric(name: str, p: torch.Tensor, t: torch.Tensor, *, pooled=False, empty=1.0) -> torch.Tensor:
    p, t = p.flatten(1).bool(), t.flatten(1).bool()
    if pooled:
        p, t = p.reshape(1, -1), t.reshape(1, -1)
    inter = (p & t).sum(1).double()
    if name == "pixel_accuracy":
        v = (p == t).double().mean(1)
    elif name == "iou":
        union = (p | t).sum(1).double()
        v = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, empty))
    else:
        total = (p.sum(1) + t.sum(1)).double()
        v = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, empty))
    return v.float()


@check("grade_metrics", "accuracy, IoU and Dice of three hand-made 2 x 3 images, one with both masks empty (the "
                        "visible tests)", mirrors_visible=True)
def metrics_visible(h):
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    e = torch.zeros(2, 3)
    pred, target = torch.stack([p, e, t])[:, None], torch.stack([t, e, t])[:, None]
    for name, expected, what_ in (("pixel_accuracy", [0.5, 1.0, 1.0], "pixel_accuracy per image"),
                                  ("iou", [0.4, 1.0, 1.0], "iou per image (both empty: 1)"),
                                  ("dice", [4 / 7, 1.0, 1.0], "dice per image (both empty: 1)")):
        check_close(tensor(h.call(name, pred, target), name), torch.tensor(expected), name=what_, dims=("image",))


def _masks() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    with seeded(601):
        p, t = torch.rand(6, 1, 5, 7) > 0.6, torch.rand(6, 1, 5, 7) > 0.75
        p[1], t[1] = False, False  # both empty
        p[2] = False  # prediction empty
        t[3] = False  # target empty
        t[4] = p[4]  # perfect
        big_p, big_t = torch.rand(2, 9, 4) > 0.5, torch.rand(2, 9, 4) > 0.5  # (B, H, W), no channel
        big_t[0] = True
    return [(p.float(), t.float(), "6 images (1, 5, 7): both empty, one empty, perfect, random"),
            (p.long(), t.long(), "the same as integer masks"), (p, t, "the same as boolean masks"),
            (big_p.float(), big_t.float(), "2 images (9, 4) without a channel dim, one target all membrane")]


@check("grade_metrics", "per image on random masks with empty, perfect and full images, float, integer and boolean "
                        "masks, [B, H, W] too: accuracy, IoU (1 when both are empty, 0 when one is), Dice; never NaN; "
                        "no course.unet")
@owns(*METRICS)
def metrics_values(h):
    for p, t, where in _masks():
        B = p.shape[0]
        for name in METRICS:
            got = tensor(h.call(name, p, t), f"{name} of {where}")
            if tuple(got.shape) != (B,):
                pooled = " (one value for the batch: one score per image, [B])" if got.numel() == 1 else ""
                raise AssertionError(f"{name} of {where} has shape {tuple(got.shape)}, expected ({B},){pooled}")
            if not bool(torch.isfinite(got.float()).all()):
                raise AssertionError(f"{name} of {where} is NaN or inf for an image: when both masks are empty the "
                                     "score is 1 (nothing to find, nothing found), never 0/0")
            expected = _metric(name, p, t)
            wrong = {"over the whole batch: one score per image, not the pooled pixels of the batch":
                     _metric(name, p, t, pooled=True).expand(B)}
            if name != "pixel_accuracy":
                wrong["0 where both masks are empty: define the score as 1 there"] = _metric(name, p, t, empty=0.0)
                other = "dice" if name == "iou" else "iou"
                wrong[f"the {other} formula: IoU = |P & T| / |P | T|, Dice = 2 |P & T| / (|P| + |T|)"] = \
                    _metric(other, p, t)
            check_close(got.float(), expected, atol=1e-6, name=f"{name} of {where}", dims=("image",),
                        likely={k: v for k, v in wrong.items() if not torch.allclose(v, expected)})
    _no_reference(h, "metrics")
