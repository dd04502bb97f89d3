"""The hidden checks of assignment 03 (autograder/checks/03_local_attention.py), in-process.

- the checks cover the notebook's grade cells one to one, each with exactly one mirror of its
  visible asserts and at least one hidden check; the source keeps only pointers to them;
- the course's answers (course/local_attention.py, run as if it were the notebook) pass every check,
  and so do correct variants written differently (einsum over shifted copies, -1e9 instead of -inf,
  an online-softmax chunked version, ...);
- a planted mistake fails exactly its grade cell, with a first line that names it (the full proof
  through a sandboxed kernel is tests/mutants/03_local_attention/, run by tests/test_mutants_<NN>.py);
- the course's answers reached through an alias or a subclass are refused, and so is a notebook that
  patches the memory measurement.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest

import course.local_attention
from tests.inprocess import assert_checks_cover, failing

ROOT = Path(__file__).resolve().parent.parent
AID = "03_local_attention"
NOTEBOOK = nbformat.read(ROOT / "source" / AID / f"{AID}.ipynb", as_version=4)
REFERENCE = (ROOT / "course" / "local_attention.py").read_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_cells(**cells: str) -> nbformat.NotebookNode:
    """The notebook with the sources of some of the student's cells replaced (a new cell: key ``extra``)."""
    nb = copy.deepcopy(NOTEBOOK)
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if gid in cells and c.metadata["nbgrader"].get("solution"):
            c.source = cells[gid]
    if "extra" in cells:
        nb.cells.append(nbformat.v4.new_code_cell(cells["extra"]))
    return nb


def _failing(patches: list[tuple[str, str]] = (), notebook: nbformat.NotebookNode | None = None,
             extra: str = "", **names) -> dict[str, list[str]]:
    return failing(AID, REFERENCE, notebook or NOTEBOOK, patches, extra, **names)


def test_a_cell_with_a_syntax_error_costs_its_own_part_only():
    """A cell that does not parse never ran: the scans of all the student's cells leave it out (04's reviewer: one
    syntax error in part 8 cost every part, "could not parse the source")."""
    failed = _failing(notebook=_with_cells(non_local="class NonLocalBlock(nn.Module:\n    pass\n",
                                           extra="def broken(:\n    pass\n"))
    assert set(failed) <= {"grade_non_local"}, failed


def test_a_debugging_cell_with_globals_costs_nothing():
    """globals() in a cell the student added (a reviewer's correct solution lost every point for it); eval and exec
    anywhere are still refused."""
    assert _failing(notebook=_with_cells(extra="print(sorted(globals())[:5])")) == {}
    # the same for a dynamic import there (06's reviewer: print(__import__("math").pi), importlib.reload(plots))
    assert _failing(notebook=_with_cells(extra='import importlib\nimportlib.reload(plots)\nprint(__import__("math").pi)'
                                         '\nprint(importlib.import_module("math").e)')) == {}
    failed = _failing(notebook=_with_cells(extra="print(eval('1 + 1'))"))
    assert failed and all("eval" in m[0] and "of your cell that starts `print(eval('1 + 1'))`" in m[0]
                          for m in failed.values()), failed  # the line of that cell, not of all cells joined


def test_ipython_syntax_in_the_students_cells_costs_nothing():
    nb = _with_cells(extra="%timeit local_attention\n!nvidia-smi\nLocalAttention2d?")
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "chunked":
            c.source = "%%time\n" + c.source
    assert _failing(notebook=nb) == {}


def test_checks_cover_the_grade_cells_one_to_one():
    assert_checks_cover(AID, NOTEBOOK)


def test_the_course_answers_pass_every_check():
    assert _failing() == {}


NAIVE_LOOP = "            a_ = torch.stack(logits, -1).softmax(-1)  # (B, N, n)"
CAT_REL = "                    r = torch.cat([rel_h[:, P + dy], rel_w[:, P + dx]], -1)  # (N, D)"
INSIDE = "    weights = logits.masked_fill(~inside, float(\"-inf\")).softmax(2)"
CHECKPOINTED = "checkpoint(rows, r, q, k, v, rel_h, rel_w, use_reentrant=False) if training\n            else "
SLAB = "        lo, hi = max(r - P, 0), min(r + chunk + P, H)  # the slab"
SPLIT = "        return x.view(B, self.heads, C // self.heads, H, W)  # (B, N, D, H, W)"
MERGE = "        y = out.flatten(1, 2)  # (B, C_out, H, W)"
PROJECT = "        q, k, v = (self._split(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))"

OUTSIDE = ("                    if not (0 <= a < H and 0 <= b < W):\n"
           "                        continue  # outside the image: never attended\n")
ATTENDED = ("                    if not (0 <= a < H and 0 <= b < W):  # a zero key and value\n"
            "                        r = torch.cat([rel_h[:, P + dy], rel_w[:, P + dx]], -1)\n"
            "                        logits.append((qij * r).sum(-1))\n"
            "                        values.append(torch.zeros_like(v[:, :, :, 0, 0]))\n"
            "                        where.append((P + dy, P + dx))\n"
            "                        continue\n")
VECTORISED_START = ("    _check_args(q, k, v, rel_h, rel_w, kernel_size)\n    B, N, D, H, W = q.shape\n"
                    "    K, P, half = kernel_size, kernel_size // 2, D // 2\n")
LH = "    lh = torch.einsum(\"bndhw,nyd->bnyhw\", q[:, :, :half], rel_h)"

MISTAKES = [  # (grade cell, first-line pattern, patches of course/local_attention.py)
    ("grade_naive", r"absolute position",
     [(CAT_REL, "                    r = torch.cat([rel_h[:, min(a, kernel_size - 1)], "
                "rel_w[:, min(b, kernel_size - 1)]], -1)")]),
    ("grade_naive", r"outside the image|no -inf mask", [(OUTSIDE, ATTENDED)]),
    ("grade_naive", r"halves swapped",
     [(CAT_REL, "                    r = torch.cat([rel_w[:, P + dx], rel_h[:, P + dy]], -1)  # (N, D)")]),
    ("grade_naive", r"sqrt\(D\)", [(NAIVE_LOOP, "            a_ = (torch.stack(logits, -1) / D ** 0.5).softmax(-1)")]),
    ("grade_naive", r"softmax over the heads", [(NAIVE_LOOP, "            a_ = torch.stack(logits, -1).softmax(1)")]),
    ("grade_vectorised", r"no -inf mask|outside the image", [(INSIDE, "    weights = logits.softmax(2)")]),
    ("grade_vectorised", r"absolute position", [(LH, LH + " * (1 + torch.arange(W, dtype=q.dtype))")]),
    ("grade_vectorised", r"softmax over the image's columns",
     [(INSIDE, "    weights = logits.masked_fill(~inside, float(\"-inf\")).softmax(-1).nan_to_num(0.0)")]),
    ("grade_vectorised", r"loops",
     [(VECTORISED_START, "    return local_attention_naive(q, k, v, rel_h, rel_w, kernel_size)\n" + VECTORISED_START)]),
    ("grade_chunked", r"slab", [(SLAB, "        lo, hi = max(r - P + 1, 0), min(r + chunk + P - 1, H)")]),
    ("grade_chunked", r"no checkpoint", [(CHECKPOINTED, "")]),
    ("grade_chunked", r"whole image at once",
     [("    outs = [checkpoint(", "    return local_attention(q, k, v, rel_h, rel_w, kernel_size)[0]\n"
                               "    outs = [checkpoint(")]),
    ("grade_layer", r"heads split",
     [(SPLIT, "        return x.view(B, C // self.heads, self.heads, H, W).transpose(1, 2)"),
      (MERGE, "        y = out.transpose(1, 2).flatten(1, 2)")]),
    ("grade_layer", r"values from k_proj",
     [(PROJECT, "        q, k, v = (self._split(p(x)) for p in (self.q_proj, self.k_proj, self.k_proj))")]),
    ("grade_layer", r"without bias",
     [("        self.q_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)",
       "        self.q_proj = nn.Conv2d(in_channels, out_channels, 1)")]),
    ("grade_non_local", r"some other way",
     [("        nn.init.zeros_(self.bn.weight)\n", "        nn.init.zeros_(self.W_z.weight)\n        nn.init.zeros_(self.W_z.bias)\n")]),
    ("grade_resnet", r"BatchNorm2d",
     [("        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),\n"
       "                                  nn.ReLU())", "        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)")]),
    ("grade_layer", r"chunk ignored", [("        if return_weights or self.chunk is None:", "        if True:")]),
    ("grade_non_local", r"softmax over the queries",
     [("        f = (theta @ phi).softmax(-1)  # (B, HW, HW): row i over all positions j",
       "        f = (theta @ phi).softmax(1)")]),
    ("grade_non_local", r"zero-initialised", [("        nn.init.zeros_(self.bn.weight)\n", "")]),
    ("grade_resnet", r"no shortcut",
     [("        return F.relu(self.bn2(self.mix2(y)) + self.shortcut(x))",
       "        return F.relu(self.bn2(self.mix2(y)))")]),
    ("grade_resnet", r"pool",
     [("        return attn if stride == 1 else nn.Sequential(attn, nn.AvgPool2d(stride))", "        return attn")]),
    ("grade_resnet", r"NonLocalBlock after stage",
     [("            if non_local == s:", "            if non_local is not None and s == non_local - 1:")]),
]


@pytest.mark.parametrize("cell, pattern, patches", MISTAKES, ids=[f"{m[0]}-{m[1][:24]}" for m in MISTAKES])
def test_a_planted_mistake_fails_its_cell_only_and_is_named(cell, pattern, patches):
    failed = _failing(patches)
    assert list(failed) == [cell], failed
    assert any(re.search(pattern, line, re.I) for line in failed[cell]), failed[cell]


CORRECT = {  # other ways to write the answers: every check passes
    "-1e9 instead of -inf (exact zeros all the same)": [
        (INSIDE, "    weights = logits.masked_fill(~inside, -1e9).softmax(2)")],
    "checkpoint with use_reentrant=True": [("use_reentrant=False) if training", "use_reentrant=True) if training")],
    "conv biases in the blocks (a bias before a BN is harmless)": [
        ("        return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)",
         "        return nn.Conv2d(in_ch, out_ch, 3, stride, 1)")],
}


@pytest.mark.parametrize("patches", CORRECT.values(), ids=list(CORRECT))
def test_correct_variants_pass(patches):
    assert _failing(patches) == {}


SHIFTED = '''
def local_attention(q, k, v, rel_h, rel_w, kernel_size):
    """Shifted copies of the zero-padded k and v, one per offset; -inf where the neighbour is outside."""
    B, N, D, H, W = q.shape
    K, P = kernel_size, kernel_size // 2
    kp, vp = (F.pad(t, (P, P, P, P)) for t in (k, v))
    ones = F.pad(q.new_ones(H, W), (P, P, P, P))
    logits, values = [], []
    for y in range(K):
        for x in range(K):
            r = torch.cat([rel_h[:, y], rel_w[:, x]], -1)[None, :, :, None, None]  # (1, N, D, 1, 1)
            s = (q * (kp[..., y:y + H, x:x + W] + r)).sum(2)
            logits.append(s.masked_fill(ones[y:y + H, x:x + W] == 0, float("-inf")))
            values.append(vp[..., y:y + H, x:x + W])
    w = torch.stack(logits, 2).softmax(2)  # (B, N, K*K, H, W)
    out = (w.unsqueeze(2) * torch.stack(values, 3)).sum(3)
    return out, w.view(B, N, K, K, H, W).permute(0, 1, 4, 5, 2, 3)
'''

ONLINE = '''
def local_attention_chunked(q, k, v, rel_h, rel_w, kernel_size, chunk):
    """Row chunks, each an online softmax over the K*K offsets (shifted copies), checkpointed when training."""
    B, N, D, H, W = q.shape
    K, P = kernel_size, kernel_size // 2
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w))

    def rows(r, q, k, v, rel_h, rel_w):
        lo, hi = max(r - P, 0), min(r + chunk + P, H)
        qs = q[..., r:min(r + chunk, H), :]
        kp, vp = (F.pad(t[..., lo:hi, :], (P, P, P - (r - lo), P - (hi - min(r + chunk, H)))) for t in (k, v))
        inside = F.pad(q.new_ones(hi - lo, W), (P, P, P - (r - lo), P - (hi - min(r + chunk, H))))
        h_ = qs.shape[3]
        m = torch.full((B, N, h_, W), float("-inf"), dtype=q.dtype)
        den, num = torch.zeros(B, N, h_, W, dtype=q.dtype), torch.zeros(B, N, v.shape[2], h_, W, dtype=q.dtype)
        for y in range(K):
            for x in range(K):
                rel = torch.cat([rel_h[:, y], rel_w[:, x]], -1)[None, :, :, None, None]
                s = (qs * (kp[..., y:y + h_, x:x + W] + rel)).sum(2)
                s = s.masked_fill(inside[y:y + h_, x:x + W] == 0, float("-inf"))
                new = torch.maximum(m, s)
                safe = new.masked_fill(new == float("-inf"), 0.0)  # no -inf - -inf
                scale, e = (m - safe).exp(), (s - safe).exp()
                den = den * scale + e
                num = num * scale.unsqueeze(2) + e.unsqueeze(2) * vp[..., y:y + h_, x:x + W]
                m = new
        return num / den.unsqueeze(2)

    outs = [checkpoint(rows, r, q, k, v, rel_h, rel_w, use_reentrant=False) if training
            else rows(r, q, k, v, rel_h, rel_w) for r in range(0, H, chunk)]
    return torch.cat(outs, 3)
'''


def test_correct_rewrites_pass():
    assert _failing(extra=SHIFTED + ONLINE) == {}


def test_the_course_answers_through_an_alias_or_a_subclass_are_refused():
    ref = course.local_attention
    failed = _failing(local_attention=ref.local_attention,
                      NonLocalBlock=type("NonLocalBlock", (ref.NonLocalBlock,), {}),
                      local_attention_chunked=lambda *a, **k: ref.local_attention_chunked(*a, **k))
    assert sorted(failed) == ["grade_chunked", "grade_non_local", "grade_vectorised"], failed
    assert all(any("course.local_attention" in line for line in lines) for lines in failed.values()), failed


def test_a_notebook_that_patches_the_meter_loses_the_memory_checks():
    patch = ("import course.device\n"
             "course.device.measure = lambda *a, **k: {'ms': 0.0, 'peak_mb': 0.0, 'largest_mb': 0.0}\n")
    failed = _failing(notebook=_with_cells(extra=patch))
    assert sorted(failed) == ["grade_chunked", "grade_layer"], failed
    assert all(any("course.device.measure" in line for line in lines) for lines in failed.values()), failed
    hook = "from torch.utils._python_dispatch import TorchDispatchMode\n"
    failed = _failing(notebook=_with_cells(extra=hook))
    assert sorted(failed) == ["grade_chunked", "grade_layer"], failed


def test_a_meter_changed_at_run_time_is_not_trusted(monkeypatch):
    import course.device

    class Blind(course.device.TensorMemory):  # a patch no source scan sees (say, run from a file): reports nothing
        def _seen(self, out, inputs):
            pass

    monkeypatch.setattr(course.device, "TensorMemory", Blind)
    failed = _failing()
    assert sorted(failed) == ["grade_chunked", "grade_layer"], failed
    assert all(any("memory meter" in line for line in lines) for lines in failed.values()), failed
