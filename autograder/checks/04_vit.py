"""Hidden checks of assignment 04 (the Vision Transformer), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``04_vit.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs and expected values are made here, from
torchvision's ``VisionTransformer`` and ``EncoderBlock`` (every parameter drawn at random: torchvision zero-initialises
the head and the class token, which would hide most mistakes), ``F.cross_entropy``, and the course's references
(``course.vit``: the one home of the solution, also used by the notebook's grade cells, and of the adapter that maps
torchvision's names to the notebook's). Conventions as in 01-03's checks:

- each exercise is graded with the references of the parts it builds on (``h.substituted``), so a mistake costs
  points once (``tests/mutants/04_vit/`` proves it);
- a check "(the visible tests)" repeats its grade cell's asserts exactly (same seeds, same calls, the same references
  substituted): it disagrees with the notebook's run only when something was tampered with;
- a failure message's first line says what is wrong and where; ``likely=`` names the classic mistake a result
  matches (patches flattened (row, column, channel), post-norm, LayerNorm's default eps, the class token appended,
  positions after the encoder, smoothing / (K - 1), the rollout's product reversed ...): those tables are this file's;
- the other checks run with course.vit's answer to the part forbidden (``owns``: also through an alias or a
  subclass), the ViT's and the block's also with torchvision's classes forbidden (``_no_torchvision``), and no cell of
  the student's may import course.vit or copy its code (``_no_reference``); the adapter ``load_torchvision_weights``
  ships to students, so the mirrors may run it in the kernel;
- LayerNorm's eps (1e-6 in ViT, 1e-5 by default) changes a token of variance ``v`` by about ``4.5e-6 / v``: at the
  tolerance on unit-variance inputs, so the block and the final norm are also fed tokens of variance ~1e-4 (4%);
- each grade cell's checks stay well under 2 s on a CPU: a request is one kernel round trip (5-10 ms), and the checks
  compute with one torch thread (the check runner sets it for every check); measured on a busy 2-core machine,
  grade_vit's ~1.2 s is the most.
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import EncoderBlock as TorchvisionBlock

import course.vit as ref
from autograder.checkkit import (Answers, TOKEN_DIMS, attribute, check_dropout_sites, check_module_grads,
                                 check_module_list, check_parameters, drawn, load_weights, quiet, seed_kernel, tensor)
from autograder.trusted import StudentError, check
from course.testing import check_close, check_rows_sum_to_one, seeded

REF = "course.vit."
TV = "torchvision.models.vision_transformer."
REF_PARTS = dict(ConvPatchEmbedding=REF + "ConvPatchEmbedding", LinearPatchEmbedding=REF + "LinearPatchEmbedding",
                 ViTBlock=REF + "ViTBlock")
PATCH_DIMS = ("batch", "patch", "value")
ATTN_DIMS = ("batch", "head", "query", "key")
SIM_DIMS = ("row", "column", "other row", "other column")


def _warm_up() -> None:
    """What the references build on first use (MHA's fast paths, the conv): when the checks load, not in a cell."""
    with quiet(), torch.no_grad():
        VisionTransformer(image_size=4, patch_size=2, num_layers=1, num_heads=1, hidden_dim=4, mlp_dim=4,
                          num_classes=2).eval()(torch.zeros(1, 3, 4, 4))


_warm_up()

# ==================================================================================================
# the course's answers and torchvision's model: not imported, not copied, not run by the student's code
# ==================================================================================================
ANSWERS = Answers("course.vit")
_no_reference, owns = ANSWERS.scan, ANSWERS.owns


@contextlib.contextmanager
def _no_torchvision(h) -> Iterator[None]:
    """torchvision's ViT classes raise in the student's kernel within the block (the checks compare with them, here)."""
    try:
        with h.forbidden(*(TV + n for n in ("VisionTransformer", "Encoder", "EncoderBlock"))):
            yield
    except StudentError as e:
        hit = re.match(r"torchvision\.models\.vision_transformer\.(\w+) may not be used here", e.message or "")
        if hit and e.type_name == "RuntimeError":
            raise AssertionError(f"your code runs torchvision's {hit.group(1)}, the model the checks compare with: "
                                 "build it from your own modules") from None
        raise


def _raises(h, name: str, call: str, *args, why: str, **kwargs) -> None:
    """The student's ``name(*args, **kwargs)`` (shown as ``call``) raises a ValueError, as the text asks."""
    try:
        h.call(name, *args, **kwargs)
    except StudentError as e:
        if e.type_name != "ValueError":
            raise AssertionError(f"{call} raised {e.shown_type}, expected a ValueError ({why})") from None
    else:
        raise AssertionError(f"{call} should raise a ValueError ({why})")


def _drawn_params(m: nn.Module, scale: float = 1.0) -> nn.Module:
    """Every parameter of ``m`` drawn at random (LayerNorm scales around 1): torchvision's zero head and class token,
    LayerNorm's 1 and 0 would hide a missing head input, a swapped norm, the class token's place."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 3:  # the class token, the position embeddings
                p.normal_(0.0, 0.5)
            elif p.dim() >= 2:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()) * (scale if p.dim() == 4 else 1.0))
            elif name.endswith("weight") and ("ln" in name or "norm" in name):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.3)
    return m


# ==================================================================================================
# 1. patchify
# ==================================================================================================
def _patch_mistakes(x: torch.Tensor, p: int) -> dict:
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    g, flat = x.reshape(B, C, gh, p, gw, p), (B, gh * gw, C * p * p)
    return {"each patch flattened (row, column, channel), einops' '(p1 p2 c)': flatten it (channel, row, column), "
            "the order of a Conv2d weight [D, C, p, p]": g.permute(0, 2, 4, 3, 5, 1).reshape(flat),
            "each patch transposed, flattened (channel, column, row): the order is (channel, row, column)":
                g.permute(0, 2, 4, 1, 5, 3).reshape(flat),
            "the grid read column by column: patch n = r * gw + c is the one at grid row r, column c (raster "
            "order, row by row)": g.permute(0, 4, 2, 1, 3, 5).reshape(flat),
            "a reshape without a permute: images.reshape(B, N, C * p * p) mixes the pixels of different patches":
                x.reshape(flat),
            "the (B, C, gh, gw, p, p) blocks reshaped without moving the channels after the grid: permute to (B, gh, "
            "gw, C, p, p) first": g.permute(0, 1, 2, 4, 3, 5).reshape(flat)}


@check("grade_patchify", "patchify(x [2, 3, 8, 12], 4): shape (2, 6, 48), patch 2 and patch 4 of image 1 (the "
                         "visible tests)", mirrors_visible=True)
def patchify_visible(h):
    with seeded(1):
        x = torch.randn(2, 3, 8, 12)
    patches = tensor(h.call("patchify", x, 4), "patches")
    if tuple(patches.shape) != (2, 6, 48):
        raise AssertionError(f"patchify(x [2, 3, 8, 12], 4): shape {tuple(patches.shape)}, expected (2, 6, 48)")
    if not torch.equal(patches[0, 2], x[0, :, 0:4, 8:12].reshape(-1)):
        raise AssertionError("patch 2 should be the one at grid row 0, column 2 (raster order, row by row)")
    if not torch.equal(patches[1, 4], x[1, :, 4:8, 4:8].reshape(-1)):
        raise AssertionError("patch 4 of image 1 (grid row 1, column 1) should be x[1, :, 4:8, 4:8] flattened in "
                             "(channel, row, column) order")


PATCH_CASES = [  # B, C, H, W, p, dtype: H != W, p = 1, p = H (one grid row), one patch, C = 1 .. 4, float64
    (2, 3, 8, 12, 2, torch.float32), (1, 1, 6, 9, 3, torch.float32), (3, 2, 4, 4, 1, torch.float32),
    (1, 4, 4, 8, 4, torch.float64), (2, 3, 5, 5, 5, torch.float32), (1, 2, 12, 6, 3, torch.float64),
    (2, 3, 16, 8, 8, torch.float32)]


@check("grade_patchify", "equals the reference exactly on random sizes (H != W, C = 1 to 4, p = 1, p = H, a single "
                         "patch, float64): raster order, each patch flattened (channel, row, column); gradients reach "
                         "the images; no course.vit")
@owns("patchify")
def patchify_random(h):
    xs = drawn(101, len(PATCH_CASES), lambda t: torch.randn(*PATCH_CASES[t][:4], dtype=PATCH_CASES[t][5]))
    g = drawn(111, 1, lambda t: torch.randn(2, 6, 8))[0]
    for (B, C, H, W, p, dtype), x in zip(PATCH_CASES, xs):
        where = f"(x [{B}, {C}, {H}, {W}], p={p}{', float64' if dtype == torch.float64 else ''})"
        got = tensor(h.call("patchify", x, p), f"patchify {where}", dtype=dtype, why=" like the images")
        check_close(got, ref.patchify(x, p), atol=0.0, rtol=0.0, name=f"patchify {where}", dims=PATCH_DIMS,
                    likely=_patch_mistakes(x, p), hint="patch n = r * gw + c holds x[:, :, r*p:(r+1)*p, "
                    "c*p:(c+1)*p] flattened (channel, row, column); the values are copied, never computed")
    x = xs[0][:, :2, :6, :4]
    dx = h.vjp("patchify", (x, 2), (g,))[0]
    if dx is None:
        raise AssertionError("patchify(x, 2): no gradient reaches the images: use torch operations only (no .detach(), "
                             "numpy or torch.tensor(...) of the values)")
    leaf = x.clone().requires_grad_()
    ref.patchify(leaf, 2).backward(g)
    check_close(tensor(dx, "gradient of the images"), leaf.grad, atol=0.0, rtol=0.0,
                name="patchify(x [2, 2, 6, 4], 2): gradient with respect to the images")
    _no_reference(h, "patchify")


# ==================================================================================================
# 2. patch embeddings (graded with the reference patchify)
# ==================================================================================================
REF_PATCHIFY = dict(patchify=REF + "patchify")


@check("grade_patch_embedding", "ConvPatchEmbedding(3, 8, 4): tokens (2, 6, 8), token 4 of image 1 is the conv at "
                                "grid (1, 1); LinearPatchEmbedding with the kernel flattened gives the same tokens "
                                "(the visible tests)", mirrors_visible=True)
def embedding_visible(h):
    with h.substituted(**REF_PATCHIFY):
        seed_kernel(h, 2)
        conv, linear = h.construct("ConvPatchEmbedding", 3, 8, 4), h.construct("LinearPatchEmbedding", 3, 8, 4)
        x = tensor(h.library("torch.randn")(2, 3, 8, 12), "x")
        tokens = tensor(conv(x), "tokens")
        if tuple(tokens.shape) != (2, 6, 8):
            raise AssertionError(f"ConvPatchEmbedding(3, 8, 4) of x [2, 3, 8, 12]: shape {tuple(tokens.shape)}, "
                                 "expected (2, 6, 8) (B, N, D)")
        one = tensor(attribute(h, conv, "proj")(x[1:2, :, 4:8, 4:8]), "conv.proj(x)")
        if not torch.allclose(tokens[1, 4], one.flatten(), atol=1e-5):
            raise AssertionError("token 4 of image 1 should be the convolution's output at grid row 1, column 1 "
                                 "(raster order)")
        state = conv.state_dict()
        if not {"proj.weight", "proj.bias"} <= set(state):
            raise AssertionError("ConvPatchEmbedding should have proj.weight and proj.bias (proj = nn.Conv2d)")
        load_weights(linear, {"proj.weight": state["proj.weight"].reshape(8, -1), "proj.bias": state["proj.bias"]},
                     "LinearPatchEmbedding")
        if not torch.allclose(tensor(linear(x), "linear(x)"), tokens, atol=1e-5):
            raise AssertionError("LinearPatchEmbedding with the conv's kernel flattened (weight.reshape(D, -1)) "
                                 "should give the conv's tokens")


def _embedding_mistakes(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: int) -> dict:
    with torch.no_grad():
        y = F.conv2d(x, w, b, stride=p)  # (B, D, gh, gw)
        B, D = y.shape[:2]
        found = {"proj(x).reshape(B, N, D) without the transpose: the conv gives (B, D, gh, gw), so flatten(2) "
                 "then transpose(1, 2)": y.reshape(B, -1, D),
                 "tokens in column-major order (the grid transposed before flatten): raster order, row by row":
                     y.transpose(2, 3).flatten(2).transpose(1, 2)}
        for label, patches in _patch_mistakes(x, p).items():
            found[f"the linear map applied to {label.split(':')[0]}"] = patches @ w.reshape(D, -1).T + b
    return found


EMBED_CASES = [(3, 8, 4, (2, 8, 12)), (1, 5, 2, (3, 6, 4)), (4, 6, 3, (1, 9, 6)), (2, 4, 1, (2, 3, 5)),
               (3, 16, 8, (2, 8, 16))]  # C, D, p, x (B, H, W): C = 1 to 4, p = 1, H != W, one grid row


@check("grade_patch_embedding", "ConvPatchEmbedding equals torchvision's conv_proj + reshape + permute, and "
                                "LinearPatchEmbedding (the kernel flattened) equals it, on random sizes (C = 1 to 4, p "
                                "= 1, H != W); exactly one proj each, of the right shapes; gradients of the images and "
                                "of proj equal the reference's; no course.vit")
@owns("ConvPatchEmbedding", "LinearPatchEmbedding")
def embedding_values(h):
    def make(t):
        C, D, p, (B, H, W) = EMBED_CASES[t]
        return nn.Conv2d(C, D, p, stride=p), torch.randn(B, C, H, W), torch.randn(B, (H // p) * (W // p), D)
    cases = drawn(201, len(EMBED_CASES), make)
    with h.substituted(**REF_PATCHIFY):
        for i, ((C, D, p, _), (proj, x, g)) in enumerate(zip(EMBED_CASES, cases)):
            B, _, H, W = x.shape
            w, b = proj.weight.detach(), proj.bias.detach()
            with torch.no_grad():  # torchvision's _process_input
                expected = proj(x).reshape(B, D, (H // p) * (W // p)).permute(0, 2, 1)
            likely = _embedding_mistakes(x, w, b, p)
            for kind, weight in (("Conv", w), ("Linear", w.reshape(D, -1))):
                name = f"{kind}PatchEmbedding({C}, {D}, {p})"
                student = h.construct(f"{kind}PatchEmbedding", C, D, p)
                if i == 0:
                    check_parameters(h, student, {"proj.weight": tuple(weight.shape), "proj.bias": (D,)},
                                     name=name, want="one layer named proj: " + (
                                         "nn.Conv2d(C, D, p, stride=p)" if kind == "Conv" else "nn.Linear(C * p * p, D)"))
                load_weights(student, {"proj.weight": weight, "proj.bias": b}, name)
                check_close(tensor(student(x), f"{name} tokens"), expected, atol=1e-5, likely=likely,
                            name=f"{name} tokens of x {tuple(x.shape)} (the same weights)", dims=TOKEN_DIMS,
                            hint="kernel p and stride p: one token per patch, (B, N, D) in raster order")
                if i == 1:
                    m = getattr(ref, f"{kind}PatchEmbedding")(C, D, p)
                    m.load_state_dict({"proj.weight": weight, "proj.bias": b})
                    check_module_grads(student, m, (x,), g, name)
    _no_reference(h, "patch_embedding")


# ==================================================================================================
# 3. the encoder block
# ==================================================================================================
def _tv_block(dim: int, heads: int, mlp_dim: int) -> nn.Module:
    return _drawn_params(TorchvisionBlock(heads, dim, mlp_dim, 0.0, 0.0)).eval()


def _our_block(tv: nn.Module, dim: int, heads: int, mlp_dim: int) -> ref.ViTBlock:
    return ref.load_torchvision_weights(ref.ViTBlock(dim, heads, mlp_dim), tv).eval()


def _block_mistakes(b: ref.ViTBlock, x: torch.Tensor) -> dict:
    def ln(n, t, eps=None):
        return F.layer_norm(t, n.normalized_shape, n.weight, n.bias, eps or n.eps)

    def run(post=False, res=(True, True), after_norm=False, act=F.gelu, eps=None):
        def attn(t):
            return b.attn(t, t, t, need_weights=False)[0]

        def mlp(t):
            return b.mlp[3](act(b.mlp[0](t)))
        if post:
            x1 = ln(b.norm1, x + attn(x), eps)
            return ln(b.norm2, x1 + mlp(x1), eps)
        if after_norm:
            h1 = ln(b.norm1, x, eps)
            h2 = ln(b.norm2, h1 + attn(h1), eps)
            return h2 + mlp(h2)
        a = attn(ln(b.norm1, x, eps))
        x1 = x + a if res[0] else a
        m = mlp(ln(b.norm2, x1, eps))
        return x1 + m if res[1] else m

    with torch.no_grad():
        return {"post-norm, LN(x + attn(x)) as in the original Transformer: ViT's block is pre-norm, "
                "x + attn(norm1(x)), then + mlp(norm2(x))": run(post=True),
                "no residual around the attention: x = x + attn(norm1(x))": run(res=(False, True)),
                "no residual around the MLP: return x + mlp(norm2(x))": run(res=(True, False)),
                "the residual taken after the norm: x + f(norm(x)) adds the un-normalised x": run(after_norm=True),
                "LayerNorm with eps 1e-5 (nn.LayerNorm's default): ViT's norms use eps=1e-6": run(eps=1e-5),
                "ReLU in the MLP: ViT's MLP uses GELU": run(act=F.relu),
                "GELU's tanh approximation: nn.GELU() (the exact one)": run(
                    act=lambda t: F.gelu(t, approximate="tanh"))}


@check("grade_encoder_block", "ViTBlock(16, 4, 32) keeps (B, T, D), equals torchvision's EncoderBlock with the "
                              "same weights; keep_attention stores (2, 4, 5, 5) weights whose rows sum to 1 (the "
                              "visible tests)", mirrors_visible=True)
def block_visible(h):
    seed_kernel(h, 3)
    block = h.construct("ViTBlock", 16, 4, 32).eval()
    theirs = h.library(TV + "EncoderBlock")(4, 16, 32, 0.0, 0.0).eval()
    x = tensor(h.library("torch.randn")(2, 5, 16), "x")
    if tuple(tensor(block(x), "ViTBlock output").shape) != (2, 5, 16):
        raise AssertionError("ViTBlock(16, 4, 32) should map (B, T, D) to (B, T, D)")
    h.library(REF + "load_torchvision_weights")(block, theirs)
    if not torch.allclose(tensor(block(x), "ViTBlock output"), tensor(theirs(x), "torchvision's"), atol=1e-5):
        raise AssertionError("ViTBlock differs from torchvision's with the same weights: x + attn(LN1(x)), then "
                             "+ MLP(LN2(x))")
    h.library("builtins.setattr")(block, "keep_attention", True)
    block(x)
    w = attribute(h, block, "attention")
    if not (isinstance(w, torch.Tensor) and tuple(w.shape) == (2, 4, 5, 5)):
        raise AssertionError("with keep_attention, block.attention should hold the weights of every head, (B, heads, "
                             "T, T)")
    check_rows_sum_to_one(w, name="block.attention")


BLOCK_CASES = [(16, 4, 32, (2, 5)), (12, 3, 20, (1, 7)), (8, 1, 8, (3, 4)), (24, 2, 48, (2, 9)), (6, 2, 12, (1, 1))]
# dim, heads, mlp_dim, x (B, T): 1-4 heads, mlp_dim < dim and > dim, a single token


def _student_block(h, tv: nn.Module, dim: int, heads: int, mlp_dim: int):
    """The student's block with the weights of torchvision's ``tv``, left in training mode (dropout 0: the same)."""
    student = h.construct("ViTBlock", dim, heads, mlp_dim)
    load_weights(student, {ours: tv.state_dict()[theirs] for ours, theirs in ref.torchvision_block_names().items()},
                 "ViTBlock")
    return student


@check("grade_encoder_block", "equals torchvision's EncoderBlock with the same (random) weights on random sizes (1-4 "
                              "heads, one token), in training (dropout 0) and eval mode, also on tokens of small "
                              "variance (LayerNorm eps 1e-6); the parameters of the notebook's names")
@owns("ViTBlock")
def block_torchvision(h):
    cases = drawn(301, len(BLOCK_CASES), lambda t: (_tv_block(*BLOCK_CASES[t][:3]),
                                                    torch.randn(*BLOCK_CASES[t][3], BLOCK_CASES[t][0])))
    with seeded(302):
        small = (_tv_block(16, 4, 32), 0.01 * torch.randn(2, 6, 16))  # variance 1e-4: eps 1e-5 changes LN by 4%
    runs = []
    for (dim, heads, mlp_dim, _), (tv, x) in [*zip(BLOCK_CASES, cases), ((16, 4, 32, None), small)]:
        with torch.no_grad():
            runs.append((dim, heads, mlp_dim, tv, x, tv(x), _block_mistakes(_our_block(tv, dim, heads, mlp_dim), x)))
    with _no_torchvision(h):
        for i, (dim, heads, mlp_dim, tv, x, expected, likely) in enumerate(runs):
            where = f"ViTBlock({dim}, {heads}, {mlp_dim}), x {tuple(x.shape)}" + (
                " of variance 1e-4" if i == len(runs) - 1 else "")
            student = _student_block(h, tv, dim, heads, mlp_dim)
            if i == 2:
                check_parameters(h, student, {n: tuple(p.shape) for n, p in _our_block(tv, 8, 1, 8).named_parameters()},
                                 name="ViTBlock(8, 1, 8)",
                                 want="the notebook's: norm1, attn (nn.MultiheadAttention), norm2, mlp.0 and mlp.3")
            for mode in ("training", "eval")[:1 + (i in (0, 3))]:
                y = tensor((student.eval() if mode == "eval" else student)(x), f"{where} output")
                check_close(y, expected, atol=1e-5, rtol=1e-4, dims=TOKEN_DIMS, likely=likely,
                            name=f"{where} output in {mode} mode (the same weights as torchvision's, dropout 0)")


@check("grade_encoder_block", "keep_attention stores the weights of every head, (B, heads, T, T), those of "
                              "attn(norm1(x)), the output unchanged, None without keep_attention; attention_dropout "
                              "goes to the attention, dropout to the others, self.dropout acts on the attention branch "
                              "in training mode only; gradients equal the reference's; no course.vit")
@owns("ViTBlock")
def block_attention_dropout_gradients(h):
    with seeded(311):
        tv, x, g = _tv_block(12, 3, 16), torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    ours = _our_block(tv, 12, 3, 16)
    ours.keep_attention = True
    with torch.no_grad():
        expected = ours(x)
        wrong = {"the weights of attn(x, x, x): keep those of the attention the block uses, on norm1(x)":
                 ours.attn(x, x, x, average_attn_weights=False)[1]}
    ours.keep_attention = False
    setattr_ = h.library("builtins.setattr")
    with _no_torchvision(h):
        student = _student_block(h, tv, 12, 3, 16)
        setattr_(student, "keep_attention", True)
        y = tensor(student(x), "output")
        w = attribute(h, student, "attention")
        if isinstance(w, torch.Tensor) and tuple(w.shape) == (2, 6, 6):
            raise AssertionError("block.attention is averaged over the heads, (B, T, T): keep every head's weights, "
                                 "(B, heads, T, T), with average_attn_weights=False")
        check_close(tensor(w, "block.attention"), ours.attention, atol=1e-5, dims=ATTN_DIMS, likely=wrong,
                    name="block.attention of ViTBlock(12, 3, 16) with keep_attention = True")
        check_close(y, expected, atol=1e-5, dims=TOKEN_DIMS, name="ViTBlock output with keep_attention = True")
        setattr_(student, "keep_attention", False)
        student(x)
        if attribute(h, student, "attention") is not None:
            raise AssertionError("with keep_attention = False, block.attention should be None after a forward (ask "
                                 "nn.MultiheadAttention for no weights, need_weights=False)")
        check_module_grads(student, ours.train(), (x,), g, "ViTBlock(12, 3, 16)")
        try:
            dropouts = attribute(h, h.construct("ViTBlock", 8, 2, 16, dropout=0.25, attention_dropout=0.125),
                                 "attn.dropout", "dropout.p", "mlp.2.p", "mlp.4.p")
        except StudentError:
            dropouts = None
        if dropouts != [0.125, 0.25, 0.25, 0.25]:
            raise AssertionError("ViTBlock(8, 2, 16, dropout=0.25, attention_dropout=0.125): attn should be "
                                 "nn.MultiheadAttention(..., dropout=attention_dropout), and dropout, mlp.2 and mlp.4 "
                                 "nn.Dropout(dropout)")
        student = h.construct("ViTBlock", 8, 2, 16)
        check_dropout_sites(h, student, {"dropout": "to the attention's output, x + self.dropout(attn(...))"},
                            lambda: student(x[..., :8]), name="ViTBlock(8, 2, 16)", seed=311)
    _no_reference(h, "encoder_block")


# ==================================================================================================
# 4. the ViT (graded with the reference patch embeddings and ViTBlock)
# ==================================================================================================
VIT_KEYS = ("image_size", "patch_size", "num_classes", "dim", "depth", "heads", "mlp_dim", "in_channels")
VIT_CASES = [  # image, patch, classes, dim, depth, heads, mlp_dim, channels, batch
    (16, 4, 10, 16, 2, 2, 32, 3, 2), (8, 2, 7, 12, 1, 3, 20, 1, 3), (24, 8, 4, 8, 3, 1, 16, 3, 2),
    (32, 8, 3, 16, 2, 4, 24, 2, 1)]
MEAN_CASES = [(16, 4, 10, 16, 1, 2, 32, 3, 2), (12, 6, 4, 8, 2, 1, 8, 2, 3)]


def _kw(case: tuple, **extra) -> dict:
    return dict(zip(VIT_KEYS, case), **extra)


def _where(kw: dict) -> str:
    return f"ViT({', '.join(f'{k}={v!r}' for k, v in kw.items())})"


def _tv_vit(case: tuple) -> nn.Module:
    image, p, classes, dim, depth, heads, mlp, C = case[:8]
    m = VisionTransformer(image_size=image, patch_size=p, num_layers=depth, num_heads=heads, hidden_dim=dim,
                          mlp_dim=mlp, num_classes=classes)
    m.conv_proj = nn.Conv2d(C, dim, p, stride=p)
    return _drawn_params(m).eval()


def _vit_run(m: ref.ViT, x: torch.Tensor, *, cls="first", pos="before", norm=True, read="cls", eps=None):
    """The reference ViT ``m`` with a planted mistake: the class token "first" or "last"; positions added "before" the
    blocks or "after" them; ``read``: "cls" (what the pool asks), "token 0", "last", "mean", "patches" (the mean of the
    patch tokens), "mean first" (the mean before the final norm)."""
    t = m.patch_embed(x)
    if m.cls_token is not None:
        c = m.cls_token.expand(x.shape[0], -1, -1)
        t = torch.cat([c, t] if cls == "first" else [t, c], 1)
    t = t + m.pos_embed if pos == "before" else t
    for block in m.blocks:
        t = block(t)
    t = t + m.pos_embed if pos == "after" else t
    if read == "mean first":
        return m.head(m.norm(t.mean(1)))
    if norm:
        t = F.layer_norm(t, m.norm.normalized_shape, m.norm.weight, m.norm.bias, eps or m.norm.eps)
    pooled = {"cls": t[:, 0] if m.cls_token is not None else t.mean(1), "token 0": t[:, 0], "last": t[:, -1],
              "mean": t.mean(1), "patches": t[:, 1:].mean(1)}[read]
    return m.head(pooled)


def _vit_mistakes(m: ref.ViT, x: torch.Tensor) -> dict:
    found = {"positions added after the encoder: add pos_embed to the tokens before the first block": dict(pos="after"),
             "no final LayerNorm after the last block (self.norm)": dict(norm=False)}
    if m.cls_token is None:
        found |= {"the head on token 0 with pool='mean': the head reads the mean of the tokens": dict(read="token 0"),
                  "the mean taken before the final norm: norm every token, then average": dict(read="mean first")}
    else:
        found |= {"the class token appended: put it in front, torch.cat([cls, tokens], dim=1), and read token 0":
                  dict(cls="last"),
                  "the class token appended (and read at the end): put it in front, token 0": dict(cls="last",
                                                                                                   read="last"),
                  "the head on the mean of the tokens with pool='cls': read the class token, x[:, 0]": dict(read="mean"),
                  "the head on the mean of the patch tokens with pool='cls': read the class token, x[:, 0]":
                      dict(read="patches"),
                  "a final LayerNorm with eps 1e-5 (nn.LayerNorm's default): ViT's norm uses eps=1e-6": dict(eps=1e-5)}
    with torch.no_grad():
        return {label: _vit_run(m, x, **kw) for label, kw in found.items()}


def _logits(student, x: torch.Tensor, where: str) -> torch.Tensor:
    """The student's logits; a class token that is not expanded to the batch is named."""
    try:
        return tensor(student(x), f"logits of {where}")
    except StudentError as e:
        if x.shape[0] > 1 and re.search(r"Sizes of tensors must match except in dimension 1", e.message or ""):
            raise AssertionError(f"{where}: a batch of {x.shape[0]} images fails where a batch of one works: expand "
                                 "the class token to the batch, cls_token.expand(B, -1, -1), before torch.cat") from None
        raise


@check("grade_vit", "logits (2, 10) equal torchvision's VisionTransformer with the same weights (a random head and "
                    "class token); pool='mean' has no class token and pos_embed (1, 16, 16) (the visible tests)",
       mirrors_visible=True)
def vit_visible(h):
    with h.substituted(**REF_PARTS):
        seed_kernel(h, 4)
        theirs = h.library("torchvision.models.VisionTransformer")(image_size=16, patch_size=4, num_layers=2,
                                                                   num_heads=2, hidden_dim=16, mlp_dim=32,
                                                                   num_classes=10).eval()
        randn = h.library("torch.randn")  # nn.init.normal_ draws what torch.randn draws (16 values or more)
        theirs.load_state_dict({"heads.head.weight": 0.3 * tensor(randn(10, 16), "head"),
                                "class_token": tensor(randn(1, 1, 16), "class token")}, strict=False)
        model = h.construct("ViT", image_size=16, patch_size=4, num_classes=10, dim=16, depth=2, heads=2,
                            mlp_dim=32).eval()
        x = tensor(randn(2, 3, 16, 16), "x")
        if tuple(tensor(model(x), "logits").shape) != (2, 10):
            raise AssertionError("ViT logits should be (B, num_classes)")
        h.library(REF + "load_torchvision_weights")(model, theirs)
        if not torch.allclose(tensor(model(x), "logits"), tensor(theirs(x), "torchvision's logits"), atol=1e-5):
            raise AssertionError("logits differ from torchvision's VisionTransformer with the same weights")
        mean = h.construct("ViT", image_size=16, patch_size=4, num_classes=10, dim=16, depth=1, heads=2, mlp_dim=32,
                           pool="mean").eval()
        cls, pos = attribute(h, mean, "cls_token", "pos_embed")
        if not (cls is None and isinstance(pos, torch.Tensor) and tuple(pos.shape) == (1, 16, 16)):
            raise AssertionError("pool='mean': no class token, one position per patch (1, 16, D)")
        if tuple(tensor(mean(x), "logits").shape) != (2, 10):
            raise AssertionError("pool='mean' logits should be (B, num_classes)")


@check("grade_vit", "equals torchvision's VisionTransformer with the same (random) weights on random configurations "
                    "(image 8-32, patch 2-8, depth 1-3, 1-4 heads, 1-3 channels, batch 1-3), in training (dropout 0) "
                    "and eval mode; embedding='linear' gives the same logits; the notebook's parameters, distinct blocks")
@owns("ViT")
def vit_torchvision(h):
    runs = []
    for case, (tv, x) in zip(VIT_CASES, drawn(401, len(VIT_CASES), lambda t: (
            _tv_vit(VIT_CASES[t]), torch.randn(VIT_CASES[t][8], VIT_CASES[t][7], *VIT_CASES[t][:1] * 2)))):
        ours = ref.load_torchvision_weights(ref.ViT(**_kw(case[:8])), tv).eval()
        with torch.no_grad():
            runs.append((_kw(case[:8]), ours, x, tv(x), _vit_mistakes(ours, x)))
    with h.substituted(**REF_PARTS), _no_torchvision(h):
        for i, (kw, ours, x, expected, likely) in enumerate(runs):
            where = _where(kw)
            student = h.construct("ViT", **kw)
            if i < 2:
                check_parameters(h, student, {n: tuple(p.shape) for n, p in ours.named_parameters()}, name=where,
                                 want="the notebook's parameters: patch_embed.proj, cls_token (1, 1, D), pos_embed (1, "
                                      "N + 1, D) (a position for the class token too), blocks.i, norm and head")
            if i == 2:
                check_module_list(h, student, "blocks", "ViTBlock", kw["depth"], name="ViT")
            load_weights(student, ours.state_dict(), "ViT")
            for mode in ("training", "eval")[:1 + (i % 2 == 0)]:
                check_close(_logits(student.eval() if mode == "eval" else student, x, where), expected, atol=1e-4,
                            rtol=1e-4, likely=likely, dims=("batch", "class"),
                            name=f"logits of {where} in {mode} mode, x {tuple(x.shape)} (torchvision's weights, "
                                 "dropout 0)")
            if i == 1:
                student = h.construct("ViT", **kw, embedding="linear")
                state = ours.state_dict()
                state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].flatten(1)
                load_weights(student, state, "ViT(embedding='linear')")
                check_close(_logits(student, x, where), expected, atol=1e-4, rtol=1e-4, dims=("batch", "class"),
                            name=f"logits of {where[:-1]}, embedding='linear') with the conv's kernel flattened",
                            hint="embedding='linear' builds a LinearPatchEmbedding(in_channels, dim, patch_size)")


@check("grade_vit", "pool='mean' equals the reference ViT with the same weights (the head on the mean of the normed "
                    "tokens), no class token, pos_embed (1, N, D); a ValueError for an unknown pool or embedding and "
                    "an image size that is not a multiple of the patch size")
@owns("ViT")
def vit_mean(h):
    cases = drawn(411, len(MEAN_CASES), lambda t: (
        _drawn_params(ref.ViT(**_kw(MEAN_CASES[t][:8], pool="mean"))).eval(),
        torch.randn(MEAN_CASES[t][8], MEAN_CASES[t][7], *MEAN_CASES[t][:1] * 2)))
    with h.substituted(**REF_PARTS), _no_torchvision(h):
        for i, (case, (ours, x)) in enumerate(zip(MEAN_CASES, cases)):
            kw = _kw(case[:8], pool="mean")
            student = h.construct("ViT", **kw)
            if i == 0:
                check_parameters(h, student, {n: tuple(p.shape) for n, p in ours.named_parameters()}, name=_where(kw),
                                 want="no cls_token and one position per patch, pos_embed (1, N, D)")
            load_weights(student, ours.state_dict(), "ViT")
            with torch.no_grad():
                expected = ours(x)
            check_close(_logits(student, x, _where(kw)), expected, atol=1e-4, rtol=1e-4, dims=("batch", "class"),
                        likely=_vit_mistakes(ours, x), name=f"logits of {_where(kw)}, x {tuple(x.shape)} (the same "
                                                            "weights, dropout 0)")
        small = dict(dim=8, depth=1, heads=2, mlp_dim=8)
        for kw, why in ((dict(image_size=8, patch_size=4, pool="max"), "pool is 'cls' or 'mean'"),
                        (dict(image_size=8, patch_size=4, embedding="patches"), "embedding is 'conv' or 'linear'"),
                        (dict(image_size=10, patch_size=4), "10 is not a multiple of 4")):
            _raises(h, "ViT", f"ViT({', '.join(f'{k}={v!r}' for k, v in kw.items())}, ...)", **kw, **small, why=why)


@check("grade_vit", "the final norm has eps 1e-6 (tokens of variance ~1e-4); dropout acts on the tokens plus positions "
                    "in training mode only; gradients reach cls_token, pos_embed and every parameter, equal to the "
                    "reference's; no course.vit")
@owns("ViT")
def vit_norm_dropout_gradients(h):
    tiny_case, small_case = (8, 4, 5, 8, 1, 2, 16, 3), (8, 4, 3, 8, 2, 2, 8, 2)
    with seeded(421):
        tiny = _drawn_params(ref.ViT(**_kw(tiny_case)), scale=0.01).eval()
        x_tiny = torch.randn(2, 3, 8, 8)
        small, x, g = _drawn_params(ref.ViT(**_kw(small_case))), torch.randn(2, 2, 8, 8), torch.randn(2, 3)
    with torch.no_grad():  # the blocks are the identity: the final norm sees the embedded tokens, variance ~1e-4
        for name in ("attn.out_proj.weight", "attn.out_proj.bias", "mlp.3.weight", "mlp.3.bias"):
            tiny.blocks[0].get_parameter(name).zero_()
        for p in (tiny.cls_token, tiny.pos_embed, tiny.patch_embed.proj.bias):
            p.mul_(0.01)
        expected, likely = tiny(x_tiny), _vit_mistakes(tiny, x_tiny)
    zero_patches = {**small.state_dict(), "patch_embed.proj.weight": torch.zeros(8, 2, 4, 4),
                    "patch_embed.proj.bias": torch.zeros(8), "cls_token": torch.zeros(1, 1, 8)}
    with h.substituted(**REF_PARTS), _no_torchvision(h):
        where = _where(_kw(tiny_case))
        student = h.construct("ViT", **_kw(tiny_case))
        load_weights(student, tiny.state_dict(), "ViT")
        check_close(_logits(student, x_tiny, where), expected, atol=1e-5, rtol=1e-4, likely=likely,
                    name=f"logits of {where} whose blocks are the identity, on tokens of variance ~1e-4",
                    dims=("batch", "class"))
        student = h.construct("ViT", **_kw(small_case))
        load_weights(student, small.state_dict(), "ViT")
        check_module_grads(student, small.train(), (x,), g, _where(_kw(small_case)))
        load_weights(student, zero_patches, "ViT")
        check_dropout_sites(h, student, {"dropout": "to the sum of the tokens and the position embeddings, "
                                                    "self.dropout(x + self.pos_embed), before the first block"},
                            lambda: student(x), name="ViT (patch embeddings and class token zero: only the positions "
                                                     "are left to drop)", seed=421)
    _no_reference(h, "vit")


# ==================================================================================================
# 5. the loss
# ==================================================================================================
def _loss_mistakes(logits: torch.Tensor, target: torch.Tensor, s: float) -> dict:
    B, K = logits.shape
    logp = logits.log_softmax(-1)
    t = F.one_hot(target, K).to(logits.dtype) if target.dim() == 1 else target

    def ce(q, logp=logp):
        return -(q * logp).sum(-1).mean()
    q = t * (1 - s) + s / K
    found = {"the sum over the batch: the mean over the batch (sum over the classes)": B * ce(q),
             "a mean over the classes too: sum over the classes, mean over the batch": ce(q) / K,
             "log_softmax over the batch (dim 0): over the classes, dim=-1": ce(q, logits.log_softmax(0))}
    if s and target.dim() == 2:
        found["soft targets not smoothed: smooth them as the class indices, (1 - smoothing) * probs + smoothing / K"] \
            = ce(t)
    if s:
        found |= {"smoothing / (K - 1) on the other classes: the target is (1 - smoothing) * target + smoothing / K, "
                  "over all K classes": ce(t * (1 - s) + (1 - t) * s / (K - 1)),
                  "no smoothing: (1 - smoothing) * target + smoothing / K": ce(t),
                  "smoothing without / K: (1 - smoothing) * target + smoothing / K": ce(t * (1 - s) + s)}
    return found


LOSS_CASES = [  # B, K, smoothing, targets ("hard", "soft", "one-hot"), dtype
    (4, 10, 0.0, "hard", torch.float32), (3, 2, 0.1, "hard", torch.float32), (5, 7, 0.3, "soft", torch.float32),
    (1, 5, 0.0, "soft", torch.float64), (6, 3, 1.0, "hard", torch.float64), (2, 12, 0.2, "one-hot", torch.float32),
    (3, 4, 0.05, "soft", torch.float64)]


def _loss_case(t: int):
    B, K, s, kind, dtype = LOSS_CASES[t]
    logits, y = 3 * torch.randn(B, K, dtype=dtype), torch.randint(0, K, (B,))
    if kind == "soft":
        y = (2 * torch.rand(B, K, dtype=dtype)).softmax(-1)
    elif kind == "one-hot":
        y = F.one_hot(y, K).to(dtype)
    return logits, y, s, f"(logits [{B}, {K}], {kind} targets, smoothing {s}{', float64' if dtype == torch.float64 else ''})"


@check("grade_loss", "class indices equal F.cross_entropy, with smoothing 0.1 too; soft targets with smoothing 0.1; "
                     "finite for logits in the thousands (the visible tests)", mirrors_visible=True)
def loss_visible(h):
    with seeded(5):
        logits, y = torch.randn(4, 10), torch.tensor([0, 3, 9, 3])
        probs = torch.rand(4, 10).softmax(-1)
    for args, expected, why in (
            ((logits, y), F.cross_entropy(logits, y), "class indices, no smoothing: should equal F.cross_entropy"),
            ((logits, y, 0.1), F.cross_entropy(logits, y, label_smoothing=0.1), "smoothing 0.1: target (1 - 0.1) * "
             "one_hot + 0.1 / K (K classes, all of them)"),
            ((logits, probs, 0.1), F.cross_entropy(logits, probs, label_smoothing=0.1), "soft targets (rows of class "
             "probabilities, as mixup makes them) with smoothing 0.1")):
        if not torch.allclose(tensor(h.call("soft_cross_entropy", *args), "loss"), expected, atol=1e-6):
            raise AssertionError(why)
    if not torch.isfinite(tensor(h.call("soft_cross_entropy", 1000 * logits, y), "loss")).all():
        raise AssertionError("not finite for logits in the thousands: take log_softmax, not the log of a softmax")


@check("grade_loss", "equals F.cross_entropy(label_smoothing=...) on random K (2-12), batches of 1-6, hard, soft and "
                     "one-hot float targets, smoothing 0 to 1, float64; a scalar; finite and right for logits in the "
                     "thousands (hard and soft targets)")
@owns("soft_cross_entropy")
def loss_random(h):
    for logits, y, s, where in drawn(501, len(LOSS_CASES), _loss_case):
        got = tensor(h.call("soft_cross_entropy", logits, y, s), f"loss {where}", shape=())
        check_close(got, F.cross_entropy(logits, y, label_smoothing=s), atol=1e-6, rtol=1e-5, name=f"loss {where}",
                    likely=_loss_mistakes(logits, y, s))
    with seeded(502):
        logits, y, probs = 2000 * torch.randn(3, 6), torch.tensor([1, 5, 0]), torch.rand(3, 6).softmax(-1)
    for target, s, kind in ((y, 0.0, "class indices"), (probs, 0.1, "soft targets, smoothing 0.1")):
        got = tensor(h.call("soft_cross_entropy", logits, target, s), "loss")
        if not torch.isfinite(got).all():
            raise AssertionError(f"inf or nan for logits in the thousands ({kind}): log(softmax) underflows to "
                                 "log(0) = -inf; take logits.log_softmax(-1)")
        check_close(got, F.cross_entropy(logits, target, label_smoothing=s), atol=1e-3, rtol=1e-5,
                    name=f"loss for logits in the thousands ({kind})")


@check("grade_loss", "the gradient with respect to the logits equals F.cross_entropy's (soft targets, smoothing 0.1); "
                     "no course.vit")
@owns("soft_cross_entropy")
def loss_gradient(h):
    with seeded(511):
        logits, probs, cot = torch.randn(3, 5), torch.rand(3, 5).softmax(-1), torch.tensor(1.7)
    got = h.vjp("soft_cross_entropy", (logits, probs, 0.1), (cot,))[0]
    if got is None:
        raise AssertionError("no gradient reaches the logits: use torch operations only (no .item(), .detach() or "
                             "numpy)")
    leaf = logits.clone().requires_grad_()
    F.cross_entropy(leaf, probs, label_smoothing=0.1).backward(cot)
    check_close(tensor(got, "gradient"), leaf.grad, atol=1e-6, rtol=1e-5,
                name="gradient of soft_cross_entropy with respect to the logits (soft targets, smoothing 0.1)")
    _no_reference(h, "loss")


# ==================================================================================================
# 6. attention rollout
# ==================================================================================================
def _rollout_mistakes(attentions: list, residual: bool) -> dict:
    T = attentions[0].shape[-1]
    eye = torch.eye(T, dtype=attentions[0].dtype)

    def layer(a):  # rows renormalised, as the text asks (a no-op for rows that sum to 1)
        a = 0.5 * a + 0.5 * eye if residual else a
        return a / a.sum(-1, keepdim=True) if residual else a

    def product(mats, reverse=False):
        out = mats[0]
        for m in mats[1:]:
            out = out @ m if reverse else m @ out
        return out
    means = [a.mean(1) for a in attentions]
    found = {"the product in the wrong order, A1 A2 ... AL: the last block's matrix goes on the left, AL ... A2 A1":
             product([layer(m) for m in means], reverse=True),
             "the heads' maximum: average the heads (mean over dim 1)": product([layer(a.amax(1)) for a in attentions]),
             "a rollout per head, averaged at the end: average the heads of each block first, then multiply":
                 product([layer(a) for a in attentions]).mean(1),
             "the last block's matrix alone: multiply every block's, AL ... A2 A1": layer(means[-1])}
    if residual:
        found |= {"the identity added after the product: add it to each block's matrix, 0.5 * A + 0.5 * I": 0.5 *
                  product(means) + 0.5 * eye,
                  "residual ignored: each block's matrix is 0.5 * A + 0.5 * I": product(means),
                  "A + I without the 0.5s and without renormalising the rows": product([m + eye for m in means])}
    else:
        found["the identity added with residual=False: the plain product of the head-averaged weights"] = \
            product([0.5 * m + 0.5 * eye for m in means])
    return found


@check("grade_rollout", "shape (2, 5, 5), A3 A2 A1 with A = 0.5 * mean + 0.5 * I; residual=False the plain product "
                        "(the visible tests)", mirrors_visible=True)
def rollout_visible(h):
    with seeded(6):
        T, eye = 5, torch.eye(5)
        attentions = [torch.rand(2, 3, T, T).softmax(-1) for _ in range(3)]
    rollout = tensor(h.call("attention_rollout", attentions), "rollout")
    if tuple(rollout.shape) != (2, T, T):
        raise AssertionError(f"rollout: shape {tuple(rollout.shape)}, expected (B, T, T) = (2, 5, 5)")
    a1, a2, a3 = (0.5 * a.mean(1) + 0.5 * eye for a in attentions)
    if not torch.allclose(rollout, a3 @ a2 @ a1, atol=1e-5):
        raise AssertionError("rollout should be A3 A2 A1 with A = 0.5 * mean over heads + 0.5 * I (the last block on "
                             "the left)")
    plain = tensor(h.call("attention_rollout", attentions, residual=False), "rollout")
    m1, m2, m3 = (a.mean(1) for a in attentions)
    if not torch.allclose(plain, m3 @ m2 @ m1, atol=1e-5):
        raise AssertionError("residual=False: the product of the head-averaged weights")


ROLLOUT_CASES = [(1, 2, 3, 4, True), (2, 1, 1, 6, False), (3, 2, 4, 5, True), (4, 3, 2, 3, False), (4, 1, 3, 7, True),
                 (2, 2, 2, 1, True), (3, 1, 4, 9, False)]  # blocks, B, heads, T, residual


@check("grade_rollout", "equals the reference on random sizes (1-4 blocks, 1-4 heads, T = 1 to 9, residual True and "
                        "False, float32 and float64, a tuple of blocks); rows sum to 1; a ValueError for no blocks")
@owns("attention_rollout")
def rollout_random(h):
    cases = drawn(601, len(ROLLOUT_CASES), lambda t: [
        (3 * torch.randn(*ROLLOUT_CASES[t][1:4], ROLLOUT_CASES[t][3],
                         dtype=torch.float64 if t % 3 == 1 else torch.float32)).softmax(-1)
        for _ in range(ROLLOUT_CASES[t][0])])
    for t, ((L, B, nh, T, residual), attentions) in enumerate(zip(ROLLOUT_CASES, cases)):
        where = f"({L} blocks of [{B}, {nh}, {T}, {T}], residual={residual}" + (
            ", float64)" if attentions[0].dtype == torch.float64 else ")")
        sent = tuple(attentions) if t == 2 else attentions
        got = tensor(h.call("attention_rollout", sent, residual=residual), f"rollout {where}")
        check_close(got, ref.attention_rollout(attentions, residual), atol=1e-6, rtol=1e-5, name=f"rollout {where}",
                    dims=("batch", "query", "key"), likely=_rollout_mistakes(attentions, residual))
        check_rows_sum_to_one(got, name=f"rollout {where}", dims=("batch", "query", "key"))
    _raises(h, "attention_rollout", "attention_rollout([])", [], why="no blocks, nothing to multiply")
    _no_reference(h, "rollout")


# ==================================================================================================
# 7. position similarity
# ==================================================================================================
def _position_mistakes(pos: torch.Tensor, gh: int, gw: int) -> dict:
    p = pos.reshape(-1, pos.shape[-1])
    patches, cls = p[-gh * gw:], p.shape[0] == gh * gw + 1
    unit = F.normalize(patches, dim=-1)
    found = {"dot products, not cosines: normalise each embedding first (F.normalize(pos, dim=-1))":
             (patches @ patches.T).reshape(gh, gw, gh, gw),
             "the grid read column by column: token 1 + r * gw + c is the patch at row r, column c (raster order)":
                 (unit @ unit.T).reshape(gw, gh, gw, gh).permute(1, 0, 3, 2),
             "embeddings normalised over the tokens (dim 0) instead of each one over its channels (dim=-1)": (
                 F.normalize(patches, dim=0) @ F.normalize(patches, dim=0).T).reshape(gh, gw, gh, gw)}
    if cls:
        first = F.normalize(p[:gh * gw], dim=-1)
        found["the class token kept and the last patch dropped: leave out token 0 when T = gh * gw + 1"] = \
            (first @ first.T).reshape(gh, gw, gh, gw)
    return found


@check("grade_positions", "shape (2, 3, 2, 3); sim[1, 2, 0, 1] is the cosine of tokens 6 and 2; the same without the "
                          "class token (the visible tests)", mirrors_visible=True)
def positions_visible(h):
    with seeded(7):
        pos = torch.randn(1, 1 + 2 * 3, 8)
    sim = tensor(h.call("position_similarity", pos, (2, 3)), "sim")
    if tuple(sim.shape) != (2, 3, 2, 3):
        raise AssertionError(f"shape {tuple(sim.shape)}, expected (gh, gw, gh, gw) = (2, 3, 2, 3)")
    u = F.normalize(pos[0, 1:], dim=-1)
    if not torch.allclose(sim[1, 2, 0, 1], u[5] @ u[1], atol=1e-5):
        raise AssertionError("sim[1, 2, 0, 1] should be the cosine of patch (1, 2) (token 6) with patch (0, 1) (token "
                             "2); token 0 is the class token")
    if not torch.allclose(tensor(h.call("position_similarity", pos[0, 1:], (2, 3)), "sim"), sim, atol=1e-6):
        raise AssertionError("without a class token (T = gh * gw) every row is a patch")


POSITION_CASES = [(2, 3, 8, True, 3), (3, 2, 4, False, 2), (4, 5, 16, True, 2), (1, 4, 6, False, 3),
                  (3, 3, 5, True, 3), (5, 2, 3, False, 2)]  # gh, gw, D, class token, dims ([1, T, D] or [T, D])


@check("grade_positions", "equals the reference on random grids (gh != gw, a single row, square), with and without "
                          "the class token, [1, T, D] and [T, D], float64: cosines of the patches' embeddings in "
                          "raster order; a ValueError when T fits neither; no course.vit")
@owns("position_similarity")
def positions_random(h):
    cases = drawn(701, len(POSITION_CASES), lambda t: torch.randn(
        *(1,) * (POSITION_CASES[t][4] - 2), POSITION_CASES[t][0] * POSITION_CASES[t][1] + POSITION_CASES[t][3],
        POSITION_CASES[t][2], dtype=torch.float64 if t % 2 else torch.float32) * (1 + 3 * torch.rand(1).item()))
    for (gh, gw, D, cls, _), pos in zip(POSITION_CASES, cases):
        where = (f"(pos_embed {list(pos.shape)}, grid ({gh}, {gw}), {'with' if cls else 'without'} a class token"
                 + (", float64)" if pos.dtype == torch.float64 else ")"))
        got = tensor(h.call("position_similarity", pos, (gh, gw)), f"sim {where}")
        check_close(got, ref.position_similarity(pos, (gh, gw)), atol=1e-6, rtol=1e-5, name=f"sim {where}",
                    dims=SIM_DIMS, likely=_position_mistakes(pos, gh, gw))
    _raises(h, "position_similarity", "position_similarity(pos_embed [1, 8, 4], (2, 3))", torch.randn(1, 8, 4), (2, 3),
            why="8 positions fit neither 2 * 3 patches nor 2 * 3 + 1 tokens")
    _no_reference(h, "positions")
