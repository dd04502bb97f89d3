"""The hidden checks of assignment 05 (autograder/checks/05_swin.py), in-process.

- the checks cover the notebook's grade cells one to one, each with exactly one mirror of its
  visible asserts and at least one hidden check; the source keeps only pointers to them;
- the course's answers (course/swin.py, run as if it were the notebook) pass every check, and so do
  correct variants written differently (windows by unfold-style reshapes, the index by broadcasting, the mask by
  slices of the rolled map, merging by a reshape ...);
- a planted mistake fails exactly its grade cell, with a first line that names it (the full proof
  through a sandboxed kernel is tests/mutants/05_swin/, run by tests/test_mutants_05.py);
- the course's answers reached through an alias or a subclass are refused, and so is torchvision's function.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import course.swin
from tests.inprocess import assert_checks_cover, failing, grade_cells

ROOT = Path(__file__).resolve().parent.parent
AID = "05_swin"
NOTEBOOK = nbformat.read(ROOT / "source" / AID / f"{AID}.ipynb", as_version=4)
REFERENCE = (ROOT / "course" / "swin.py").read_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _failing(patches: list[tuple[str, str]] = (), extra: str = "", **names) -> dict[str, list[str]]:
    return failing(AID, REFERENCE, NOTEBOOK, patches, extra, **names)


def test_checks_cover_the_grade_cells_one_to_one():
    assert_checks_cover(AID, NOTEBOOK)


def test_the_course_answers_pass_every_check():
    assert _failing() == {}


PARTITION = "    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C)"
REL = "    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M): query minus key, in -(M-1)..M-1"
INDEX = "    return (rel[0] + M - 1) * (2 * M - 1) + (rel[1] + M - 1)"
ROWS = "    rows = ((0, -M), (-M, -sy), (-sy, None)) if sy else ((0, None),)"
COLS = "    cols = ((0, -M), (-M, -sx), (-sx, None)) if sx else ((0, None),)"
MASK_ADD = ("    if sy or sx:\n        mask = shift_mask(Hp, Wp, M, (sy, sx), device=x.device)  # (nW, M*M, M*M)\n"
            "        nW = mask.shape[0]\n"
            "        logits = (logits.view(B, nW, heads, M * M, M * M) + mask[None, :, None]).view_as(logits)\n")
ROLL_BACK = "        out = torch.roll(out, shifts=(sy, sx), dims=(1, 2))\n"
BIAS = "    logits = logits + bias_table[relative_position_index(M).to(x.device)].permute(2, 0, 1)  # + (heads, M*M, M*M)"
MERGE = "        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)"
BLOCK = "        x = x + self.attn(self.norm1(x))\n        return x + self.mlp(self.norm2(x))"
SHIFTS = "0 if i % 2 == 0 else window // 2"

MISTAKES = [  # (grade cell, first-line pattern, patches of course/swin.py)
    ("grade_windows", r"pixels of a window column by column",
     [(PARTITION, "    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 4, 2, 5)")]),
    ("grade_windows", r"column order",
     [(PARTITION, "    x = x.view(B, H // M, M, W // M, M, C).permute(0, 3, 1, 2, 4, 5)")]),
    ("grade_relative_position", r"key minus query",
     [(REL, "    rel = coords[:, None, :] - coords[:, :, None]")]),
    ("grade_relative_position", r"times 2M",
     [(INDEX, "    return (rel[0] + M - 1) * (2 * M) + (rel[1] + M - 1)")]),
    ("grade_shift_mask", r"before the roll",
     [(ROWS, "    rows = ((0, sy), (sy, None)) if sy else ((0, None),)"),
      (COLS, "    cols = ((0, sx), (sx, None)) if sx else ((0, None),)")]),
    ("grade_shift_mask", r"no mask at all",
     [("    return torch.zeros(same.shape, device=device).masked_fill(~same, MASKED)",
       "    return torch.zeros(same.shape, device=device)")]),
    ("grade_window_attention", r"without its mask", [(MASK_ADD, "")]),
    ("grade_window_attention", r"not reversed", [(ROLL_BACK, "        pass\n")]),
    ("grade_window_attention", r"no relative position bias", [(BIAS, "    logits = logits")]),
    ("grade_patch_merging", r"column offset first",
     [(MERGE, "        x = torch.cat([x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]], dim=-1)")]),
    ("grade_patch_merging", r"no LayerNorm", [("        return self.reduction(self.norm(x))",
                                                "        return self.reduction(x)")]),
    ("grade_swin", r"post-norm", [(BLOCK, "        x = self.norm1(x + self.attn(x))\n"
                                          "        return self.norm2(x + self.mlp(x))")]),
    ("grade_swin", r"Swin\(", [(SHIFTS, "0")]),
]


@pytest.mark.parametrize("cell, pattern, patches", MISTAKES, ids=[f"{m[0]}-{m[1][:24]}" for m in MISTAKES])
def test_a_planted_mistake_fails_its_cell_only_and_is_named(cell, pattern, patches):
    failed = _failing(patches)
    assert list(failed) == [cell], failed
    assert any(re.search(pattern, line, re.I) for line in failed[cell]), failed[cell]


CORRECT = {  # other ways to write the answers: every check passes
    "merging by a reshape": [(MERGE, "        B, H2, W2, C = x.shape\n"
                                     "        x = x.view(B, H2 // 2, 2, W2 // 2, 2, C).permute(0, 1, 3, 4, 2, 5)"
                                     ".reshape(B, H2 // 2, W2 // 2, 4 * C)")],
    "the index by a flat offset": [(INDEX, "    return (rel[0] + M - 1) * (2 * M - 1) + rel[1] + M - 1")],
    "the mask with -100 as a literal": [("    return torch.zeros(same.shape, device=device).masked_fill(~same, MASKED)",
                                         "    return torch.where(same, 0.0, -100.0)")],
}


@pytest.mark.parametrize("patches", CORRECT.values(), ids=list(CORRECT))
def test_correct_variants_pass(patches):
    assert _failing(patches) == {}


def test_the_course_answers_through_an_alias_or_a_subclass_are_refused():
    ref = course.swin
    failed = _failing(shift_mask=lambda *a, **k: ref.shift_mask(*a, **k), PatchMerging=type("PatchMerging",
                                                                                              (ref.PatchMerging,), {}))
    assert sorted(failed) == ["grade_patch_merging", "grade_shift_mask"], failed
    assert all(any("course.swin" in line for line in lines) for lines in failed.values()), failed


def test_torchvisions_patch_merging_is_refused():
    from torchvision.models.swin_transformer import PatchMerging
    failed = _failing(PatchMerging=PatchMerging)
    assert list(failed) == ["grade_patch_merging"], failed
    assert any("torchvision's PatchMerging" in line for line in failed["grade_patch_merging"]), failed


def test_each_grade_cell_checks_in_under_two_seconds():
    import time
    from tests.inprocess import namespace, run_checks
    ns = namespace(REFERENCE)
    t0 = time.perf_counter()
    run_checks(AID, ns, NOTEBOOK)
    assert (time.perf_counter() - t0) / len(grade_cells(NOTEBOOK)) < 2.0
