"""The hidden checks of assignment 04 (autograder/checks/04_vit.py), in-process.

- the checks cover the notebook's grade cells one to one, each with exactly one mirror of its
  visible asserts and at least one hidden check; the source keeps only pointers to them;
- the course's answers (course/vit.py, run as if it were the notebook) pass every check, and so do
  correct variants written differently (F.unfold patches, a repeated class token, functools.reduce, logsumexp ...);
- a planted mistake fails exactly its grade cell, with a first line that names it (the full proof
  through a sandboxed kernel is tests/mutants/04_vit/, run by tests/test_mutants_<NN>.py);
- the course's answers reached through an alias or a subclass are refused, and so is torchvision's block.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import course.vit
from tests.inprocess import assert_checks_cover, failing

ROOT = Path(__file__).resolve().parent.parent
AID = "04_vit"
NOTEBOOK = nbformat.read(ROOT / "source" / AID / f"{AID}.ipynb", as_version=4)
REFERENCE = (ROOT / "course" / "vit.py").read_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _failing(patches: list[tuple[str, str]] = (), extra: str = "", **names) -> dict[str, list[str]]:
    return failing(AID, REFERENCE, NOTEBOOK, patches, extra, **names)


def test_checks_cover_the_grade_cells_one_to_one():
    assert_checks_cover(AID, NOTEBOOK)


def test_the_course_answers_pass_every_check():
    assert _failing() == {}


PATCH_PERMUTE = "    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)"
CONV_TOKENS = "        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, gh, gw) -> (B, N, D)"
NORM1 = "        self.norm1 = nn.LayerNorm(dim, eps=1e-6)"
BLOCK_FORWARD = ("        x = x + self.dropout(a)\n"
                 "        return x + self.mlp(self.norm2(x))")
CLS_CAT = "            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T, D)"
POS = "        x = self.dropout(x + self.pos_embed)"
HEAD = "        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))"
SMOOTH = "    target = target * (1.0 - smoothing) + smoothing / K"
LOSS = "    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()"
PRODUCT = "        result = a if result is None else a @ result"
MEAN_HEADS = "        a = w.mean(dim=1)  # (B, T, T)"
UNIT = "    unit = F.normalize(pos, dim=-1)"

MISTAKES = [  # (grade cell, first-line pattern, patches of course/vit.py)
    ("grade_patchify", r"\(row, column, channel\)", [(PATCH_PERMUTE, "    x = x.permute(0, 2, 4, 3, 5, 1)")]),
    ("grade_patchify", r"column by column", [(PATCH_PERMUTE, "    x = x.permute(0, 4, 2, 1, 3, 5)")]),
    ("grade_patchify", r"transposed", [(PATCH_PERMUTE, "    x = x.permute(0, 2, 4, 1, 5, 3)")]),
    ("grade_patch_embedding", r"without the transpose",
     [(CONV_TOKENS, "        return self.proj(images).reshape(images.shape[0], -1, self.proj.out_channels)")]),
    ("grade_patch_embedding", r"column-major",
     [(CONV_TOKENS, "        return self.proj(images).transpose(2, 3).flatten(2).transpose(1, 2)")]),
    ("grade_encoder_block", r"eps 1e-5", [(NORM1, "        self.norm1 = nn.LayerNorm(dim)")]),
    ("grade_encoder_block", r"post-norm",
     [("        h = self.norm1(x)\n        a, w = self.attn(h, h, h,", "        h = x\n        a, w = self.attn(h, h, h,"),
      (BLOCK_FORWARD, "        x = self.norm1(x + self.dropout(a))\n        return self.norm2(x + self.mlp(x))")]),
    ("grade_encoder_block", r"ReLU", [("nn.GELU()", "nn.ReLU()")]),
    ("grade_encoder_block", r"averaged over the heads", [("average_attn_weights=False", "average_attn_weights=True")]),
    ("grade_encoder_block", r"no residual around the MLP",
     [(BLOCK_FORWARD, "        x = x + self.dropout(a)\n        return self.mlp(self.norm2(x))")]),
    ("grade_vit", r"class token appended",
     [(CLS_CAT, "            x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], dim=1)")]),
    ("grade_vit", r"positions added after the encoder",
     [(POS, "        x = self.dropout(x)"), ("        x = self.norm(x)\n", "        x = self.norm(x + self.pos_embed)\n")]),
    ("grade_vit", r"no final LayerNorm", [("        x = self.norm(x)\n", "")]),
    ("grade_vit", r"mean of the tokens with pool='cls'", [(HEAD, "        return self.head(x.mean(dim=1))")]),
    ("grade_vit", r"head on token 0 with pool='mean'", [(HEAD, "        return self.head(x[:, 0])")]),
    ("grade_vit", r"eps 1e-5", [("        self.norm = nn.LayerNorm(dim, eps=1e-6)", "        self.norm = nn.LayerNorm(dim)")]),
    ("grade_vit", r"never drops", [(POS, "        x = self.dropout(x) + self.pos_embed")]),
    ("grade_vit", r"expand the class token",
     [(CLS_CAT, "            x = torch.cat([self.cls_token, x], dim=1)")]),
    ("grade_vit", r"pos_embed has shape \(1, 16, 16\), expected \(1, 17, 16\)",
     [("        n_tokens = (image_size // patch_size) ** 2 + (pool == \"cls\")",
       "        n_tokens = (image_size // patch_size) ** 2"),
      (POS, "        x = self.dropout(x + F.pad(self.pos_embed, (0, 0, 1, 0)))")]),
    ("grade_vit", r"should raise a ValueError",
     [("        if pool not in (\"cls\", \"mean\"):\n            raise", "        if False:\n            raise")]),
    ("grade_loss", r"K - 1",
     [(SMOOTH, "    target = target * (1.0 - smoothing - smoothing / (K - 1)) + smoothing / (K - 1)")]),
    ("grade_loss", r"sum over the batch", [(LOSS, "    return -(target * logits.log_softmax(dim=-1)).sum()")]),
    ("grade_loss", r"soft targets not smoothed",
     [(SMOOTH, "        target = target * (1.0 - smoothing) + smoothing / K")]),
    ("grade_loss", r"in the thousands", [(LOSS, "    return -(target * logits.softmax(dim=-1).log()).sum(dim=-1).mean()")]),
    ("grade_rollout", r"wrong order", [(PRODUCT, "        result = a if result is None else result @ a")]),
    ("grade_rollout", r"maximum", [(MEAN_HEADS, "        a = w.amax(dim=1)")]),
    ("grade_rollout", r"ValueError", [('        raise ValueError("attention_rollout needs', '        return ("attention_rollout needs')]),
    ("grade_positions", r"dot products", [(UNIT, "    unit = pos")]),
    ("grade_positions", r"class token kept",
     [("    if pos.shape[0] == gh * gw + 1:\n        pos = pos[1:]", "    if pos.shape[0] == gh * gw + 1:\n        pos = pos[:-1]")]),
    ("grade_positions", r"column by column",
     [("    return (unit @ unit.T).reshape(gh, gw, gh, gw)",
       "    return (unit @ unit.T).reshape(gw, gh, gw, gh).permute(1, 0, 3, 2)")]),
]


@pytest.mark.parametrize("cell, pattern, patches", MISTAKES, ids=[f"{m[0]}-{m[1][:24]}" for m in MISTAKES])
def test_a_planted_mistake_fails_its_cell_only_and_is_named(cell, pattern, patches):
    failed = _failing(patches)
    assert list(failed) == [cell], failed
    assert any(re.search(pattern, line, re.I) for line in failed[cell]), failed[cell]


CORRECT = {  # other ways to write the answers: every check passes
    "patchify by F.unfold": [("    x = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, gh, p, gw, p)\n"
                              + PATCH_PERMUTE + "\n    return x.reshape(B, (H // p) * (W // p), C * p * p)",
                              "    return F.unfold(images, p, stride=p).transpose(1, 2)")],
    "a class token repeated": [(CLS_CAT, "            x = torch.cat([self.cls_token.repeat(len(x), 1, 1), x], 1)")],
    "loss by logsumexp": [(LOSS, "    return (target * (logits.logsumexp(-1, keepdim=True) - logits)).sum(-1).mean()")],
    "positions by cosine_similarity": [("    unit = F.normalize(pos, dim=-1)\n    return (unit @ unit.T)",
                                        "    return F.cosine_similarity(pos[:, None], pos[None], dim=-1)")],
}


@pytest.mark.parametrize("patches", CORRECT.values(), ids=list(CORRECT))
def test_correct_variants_pass(patches):
    assert _failing(patches) == {}


def test_the_course_answers_through_an_alias_or_a_subclass_are_refused():
    ref = course.vit
    failed = _failing(attention_rollout=ref.attention_rollout, ViT=type("ViT", (ref.ViT,), {}),
                      soft_cross_entropy=lambda *a, **k: ref.soft_cross_entropy(*a, **k))
    assert sorted(failed) == ["grade_loss", "grade_rollout", "grade_vit"], failed
    assert all(any("course.vit" in line for line in lines) for lines in failed.values()), failed


TORCHVISION_BLOCK = '''
class ViTBlock(nn.Module):
    """torchvision's block under the notebook's names (the same modules registered twice)."""

    def __init__(self, dim, heads, mlp_dim, dropout=0.0, attention_dropout=0.0):
        super().__init__()
        self.keep_attention, self.attention = False, None
        self.norm1 = self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = self.self_attention = nn.MultiheadAttention(dim, heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        if self.keep_attention:
            self.attention = self.attn(self.norm1(x), self.norm1(x), self.norm1(x), average_attn_weights=False)[1]
        return _TorchvisionBlock.forward(self, x)
'''


def test_torchvisions_block_is_refused():
    from torchvision.models.vision_transformer import EncoderBlock
    failed = _failing(extra=TORCHVISION_BLOCK, _TorchvisionBlock=EncoderBlock)
    assert list(failed) == ["grade_encoder_block"], failed
    assert any("torchvision's EncoderBlock" in line for line in failed["grade_encoder_block"]), failed
