"""The hidden checks of assignment 01 (autograder/checks/01_attention_seq2seq.py), in-process.

- the checks cover the notebook's grade cells one to one, each with exactly one mirror of its
  visible asserts and at least one hidden check; the source keeps only pointers to them;
- the course's answers (course/seq2seq.py, run as if it were the notebook) pass every check;
- a planted mistake fails exactly its grade cell, with a first line that names it (the full proof
  through a sandboxed kernel is tests/mutants/01_attention_seq2seq/, run by tests/test_mutants_<NN>.py);
- the course's answers reached through an alias or a subclass are refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import course.seq2seq
from course.testing import TableModel
from tests.inprocess import assert_checks_cover, failing

ROOT = Path(__file__).resolve().parent.parent
AID = "01_attention_seq2seq"
NOTEBOOK = nbformat.read(ROOT / "source" / AID / f"{AID}.ipynb", as_version=4)
REFERENCE = (ROOT / "course" / "seq2seq.py").read_text()


def _failing(patches: list[tuple[str, str]] = (), notebook: nbformat.NotebookNode | None = None,
             **names) -> dict[str, list[str]]:
    return failing(AID, REFERENCE, notebook or NOTEBOOK, patches, TableModel=TableModel, **names)


def test_checks_cover_the_grade_cells_one_to_one():
    assert_checks_cover(AID, NOTEBOOK)


def test_the_course_answers_pass_every_check():
    assert _failing() == {}


def test_ipython_syntax_in_the_students_cells_costs_nothing():
    """A cell of the student's with a magic or a shell escape (``%timeit``, ``!nvidia-smi``): the scans read the
    Python the kernel ran, not a line they cannot parse."""
    import copy

    nb = copy.deepcopy(NOTEBOOK)
    nb.cells.append(nbformat.v4.new_code_cell("%timeit dot_score(torch.ones(1, 2), torch.ones(1, 3, 2))\n!nvidia-smi\n"
                                              "masked_softmax?"))
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "scores":
            c.source = "%%time\n" + c.source
    assert _failing(notebook=nb) == {}


MISTAKES = [  # (grade cell, first-line pattern, patches of course/seq2seq.py)
    ("grade_scores", r"divided by d instead of sqrt",
     [("return dot_score(query, keys) / math.sqrt(query.size(-1))", "return dot_score(query, keys) / query.size(-1)")]),
    ("grade_masked_softmax", r"mask inverted",
     [('scores.masked_fill(~mask, float("-inf"))', 'scores.masked_fill(mask, float("-inf"))'),
      ("return w.masked_fill(~mask, 0.0)", "return w.masked_fill(mask, 0.0).nan_to_num(0.0)")]),
    ("grade_attention", r"raw scores",
     [("return (weights.unsqueeze(1) @ keys).squeeze(1), weights",
       "return (scores.unsqueeze(1) @ keys).squeeze(1), weights")]),
    ("grade_encoder", r"backward direction first",
     [("torch.cat([h[0], h[1]], dim=-1)", "torch.cat([h[1], h[0]], dim=-1)")]),
    ("grade_decoder", r"reads s_\{i-1\}",
     [("return self.out(torch.cat([s, c, e], dim=-1)), s, a",
       "return self.out(torch.cat([s_prev, c, e], dim=-1)), s, a")]),
    ("grade_fixed_context", r"last time step",
     [("fwd = enc_out[torch.arange(enc_out.size(0), device=enc_out.device), last, :H]", "fwd = enc_out[:, -1, :H]")]),
    ("grade_seq2seq", r"teacher forcing shifted",
     [("self.decoder(tgt[:, t], s, enc_out, mask)", "self.decoder(tgt[:, t + 1], s, enc_out, mask)")]),
    ("grade_greedy", r"stop as soon as", [("            if bool(done.all()):\n                break\n", "")]),
    ("grade_beam", r"length normalisation",
     [("finished[b].append((score / n ** alpha, h))", "finished[b].append((score, h))")]),
]


@pytest.mark.parametrize("cell, pattern, patches", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_planted_mistake_fails_its_cell_only_and_is_named(cell, pattern, patches):
    failed = _failing(patches)
    assert list(failed) == [cell], failed
    assert any(re.search(pattern, line, re.I) for line in failed[cell]), failed[cell]


def test_the_course_answers_through_an_alias_or_a_subclass_are_refused():
    ref = course.seq2seq
    failed = _failing(masked_softmax=ref.masked_softmax, Encoder=type("Encoder", (ref.Encoder,), {}),
                      beam_search=lambda *a, **k: ref.beam_search(*a, **k))
    assert sorted(failed) == ["grade_beam", "grade_encoder", "grade_masked_softmax"], failed
    assert all(any("course.seq2seq" in line for line in lines) for lines in failed.values()), failed
