"""The hidden checks of assignment 06 (autograder/checks/06_unet.py), in-process.

- the checks cover the notebook's grade cells one to one, each with exactly one mirror of its
  visible asserts and at least one hidden check; the source keeps only pointers to them;
- the course's answers (course/unet.py, run as if it were the notebook) pass every check, and so do
  correct variants written differently;
- a planted mistake fails exactly its grade cell, with a first line that names it (the full proof
  through a sandboxed kernel is tests/mutants/06_unet/, run by tests/test_mutants_<NN>.py);
- the course's answers reached through an alias or a subclass are refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import course.unet
from tests.inprocess import assert_checks_cover, failing

ROOT = Path(__file__).resolve().parent.parent
AID = "06_unet"
NOTEBOOK = nbformat.read(ROOT / "source" / AID / f"{AID}.ipynb", as_version=4)
REFERENCE = (ROOT / "course" / "unet.py").read_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _failing(patches: list[tuple[str, str]] = (), extra: str = "", **names) -> dict[str, list[str]]:
    return failing(AID, REFERENCE, NOTEBOOK, patches, extra, **names)


def test_checks_cover_the_grade_cells_one_to_one():
    assert_checks_cover(AID, NOTEBOOK)


def test_the_course_answers_pass_every_check():
    assert _failing() == {}


STAMP = "            full[:, :, i * sh:i * sh + kH, j * sw:j * sw + kW] += stamp"
CAT = "                x = torch.cat([features[level], x], 1)  # [skip, upsampled]"
PAD = "        x = F.pad(x, (0, (-W) % m, 0, (-H) % m))  # zeros at the right and bottom: multiples of 2**depth"
IOU = "    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))"

MISTAKES = [  # (grade cell, first-line pattern, patches of course/unet.py)
    ("grade_fc_to_conv", r"\(out, h, w, C\)|channel first",
     [("conv.weight.copy_(linear.weight.view(out_features, channels, height, width))",
       "conv.weight.copy_(linear.weight.view(out_features, height, width, channels).permute(0, 3, 1, 2))")]),
    ("grade_fc_to_conv", r"bias", [("            conv.bias.copy_(linear.bias)", "            pass")]),
    ("grade_conv_transpose", r"flipped", [(STAMP, STAMP.replace("+= stamp", "+= stamp.flip(-1, -2)"))]),
    ("grade_conv_transpose", r"shape|output_padding",
     [("(H - 1) * sh + kH + oh, (W - 1) * sw + kW + ow)", "(H - 1) * sh + kH, (W - 1) * sw + kW)")]),
    ("grade_conv_transpose", r"conv_transpose2d|may not",
     [("    B, C_in, H, W = x.shape\n    C_out, kH, kW",
       "    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)\n"
       "    B, C_in, H, W = x.shape\n    C_out, kH, kW")]),
    ("grade_max_unpool", r"nearest",
     [("    out = x.new_zeros(B, C, H * W)\n    out.scatter_(2, indices.flatten(2), x.flatten(2))\n"
       "    return out.view(B, C, H, W)",
       "    return F.interpolate(x, size=(H, W), mode='nearest')")]),
    ("grade_max_unpool", r"max_unpool2d|may not",
     [("    out = x.new_zeros(B, C, H * W)\n",
       "    return F.max_unpool2d(x, indices, 2, output_size=(H, W))\n    out = x.new_zeros(B, C, H * W)\n")]),
    ("grade_unet", r"skip", [(CAT, "                x = torch.cat([x, features[level]], 1)")]),
    ("grade_unet", r"centred|bottom and right",
     [(PAD, "        x = F.pad(x, ((-W) % m // 2, (-W) % m - (-W) % m // 2, (-H) % m // 2, (-H) % m - (-H) % m // 2))"),
      ("        return self.head(x)[..., :H, :W]  # (B, out_ch, H, W)",
       "        return self.head(x)[..., (-H) % m // 2:(-H) % m // 2 + H, (-W) % m // 2:(-W) % m // 2 + W]")]),
    ("grade_unet", r"padded shape|crop", [("        return self.head(x)[..., :H, :W]  # (B, out_ch, H, W)",
                                           "        return self.head(x)")]),
    ("grade_losses", r"sum over the pixels", [("    return per_pixel.mean()", "    return per_pixel.sum()")]),
    ("grade_losses", r"whole batch",
     [("    p = torch.sigmoid(logits).flatten(1)\n    t = target.flatten(1)",
       "    p = torch.sigmoid(logits).reshape(1, -1)\n    t = target.reshape(1, -1)")]),
    ("grade_losses", r"not finite|NaN",
     [("    per_pixel = F.softplus(logits) - target * logits",
       "    p = torch.sigmoid(logits)\n    per_pixel = -(target * p.log() + (1 - target) * (1 - p).log())")]),
    ("grade_metrics", r"NaN", [(IOU, "    return inter / union")]),
    ("grade_metrics", r"whole batch|one score per image",
     [("    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()",
       "    inter, union = (p & t).sum().float().expand(p.shape[0]), (p | t).sum().float().expand(p.shape[0])")]),
]


@pytest.mark.parametrize("cell, pattern, patches", MISTAKES, ids=[f"{m[0]}-{m[1][:24]}" for m in MISTAKES])
def test_a_planted_mistake_fails_its_cell_only_and_is_named(cell, pattern, patches):
    failed = _failing(patches)
    assert list(failed) == [cell], failed
    assert any(re.search(pattern, line, re.I) for line in failed[cell]), failed[cell]


CORRECT = {  # other ways to write the answers: every check passes
    "stamps by a product and a sum instead of einsum": [
        ('            stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight)  # (B, C_out, kH, kW)',
         "            stamp = (x[:, :, i, j, None, None, None] * weight).sum(1)")],
    "IoU by torch.nan_to_num of a 0/0": [(IOU, "    return torch.nan_to_num(inter / union, nan=1.0)")],
    "BCE by logsigmoid": [("    per_pixel = F.softplus(logits) - target * logits",
                           "    per_pixel = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))")],
}


@pytest.mark.parametrize("patches", CORRECT.values(), ids=list(CORRECT))
def test_correct_variants_pass(patches):
    assert _failing(patches) == {}


def test_the_course_answers_through_an_alias_or_a_subclass_are_refused():
    ref = course.unet
    failed = _failing(iou=ref.iou, UNet=type("UNet", (ref.UNet,), {}),
                      max_unpool=lambda *a, **k: ref.max_unpool(*a, **k))
    assert sorted(failed) == ["grade_max_unpool", "grade_metrics", "grade_unet"], failed
    assert all(any("course.unet" in line for line in lines) for lines in failed.values()), failed
